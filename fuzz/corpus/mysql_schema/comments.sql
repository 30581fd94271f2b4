-- c
# d
/* e */ SELECT 'USE x'