//! The commented default configuration `hop configure` prints: every key with its default, so
//! that an operator starts from a file that parses to exactly what no file would give.

/// The commented default configuration printed by `hop configure`.
pub const DEFAULT_CONFIG_YAML: &str = r#"# Hop configuration. Every key is optional; the values shown are the defaults.
# Reference: docs/config.md. Start with: hop start --config hop.yaml
version: v1

hop:
  # Where the embedded database (redb), the admin socket and generated keys live.
  data_dir: hop-data
  # Where the cluster state is kept (Teleport's storage.type): dir, redb in the data dir (the
  # default), or postgresql, one database shared by several appliances (conn_string names it;
  # TLS with verify-full and a client certificate). And where audit events and session
  # recordings are kept (Teleport's storage URIs). Unset: in the data dir (audit.db,
  # recordings/). Only file:///ABSOLUTE/DIR for now.
  # storage:
  #   type: postgresql
  #   conn_string: postgresql://hop@db.example.com:5432/hop?sslmode=verify-full&sslrootcert=/etc/hop/pg-ca.crt&sslcert=/etc/hop/pg.crt&sslkey=/etc/hop/pg.key
  #   audit_events_uri: file:///var/lib/hop/audit
  #   audit_sessions_uri: file:///var/lib/hop/recordings
  # Diagnostics HTTP server: /healthz, /readyz and /metrics (Prometheus). Off unless set.
  # diag_addr: 127.0.0.1:3000
  log:
    # error, warn, info, debug or trace (or a tracing filter such as "hop=debug,info")
    severity: info
    # text or json
    format: text
  # Services this process runs. An all-in-one cluster is auth + proxy; an agent is, for example,
  # [app] with proxy_server and (the first time) join_token set.
  roles: [auth, proxy]
  # proxy_server: proxy.example.com:3080
  # join_token: <from hop admin tokens add --type app>
  # ca_pin: sha256:...

auth_service:
  # Fixed at first start; defaults to this machine's host name.
  # cluster_name: example.com
  authentication:
    type: local
    # otp (password + TOTP code), on or optional (password + TOTP code or a security key
    # registered on the web account page), off (password only; not for production)
    second_factor: otp
    # The WebAuthn RP ID security keys are registered for; defaults to the host of the
    # proxy's first public_addr (changing it makes every registered key unusable).
    # webauthn:
    #   rp_id: hop.example.com
  login:
    # Consecutive failed logins that lock a user, and for how long.
    max_failed_attempts: 5
    lockout: 30m
    # Login attempts allowed per source IP per minute.
    attempts_per_ip_per_minute: 30
    # Lifetime of invite and reset links printed by `hop admin users add/reset`.
    invite_ttl: 1h
  audit:
    # Delete audit events older than this (whole days); unset keeps them forever.
    # retention: 90d
    # Copy every durable event as a JSON line to stdout or a file, for a log shipper.
    # forward: /var/log/hop/audit.jsonl
    # How long session events (which nothing waits for) may wait to share one commit.
    # unwatched_linger: 10ms

proxy_service:
  # The one port every protocol shares (TLS).
  listen_addr: 0.0.0.0:3080
  # Names clients use to reach the proxy (DNS names or IPs); added to its certificate.
  public_addr: []
  # Operator-supplied certificate and key (PEM). Without them the cluster's host CA issues one.
  # tls:
  #   cert_file: /etc/hop/proxy.crt
  #   key_file: /etc/hop/proxy.key
  # Deadlines before authentication: a new connection's first bytes (to classify it), its TLS
  # handshake, an SSH client's banner, key exchange and authentication at the jump host, an
  # HTTP/1.1 request head, an HTTP connection with no request in flight, an agent's tunnel hello,
  # and a database client's startup message.
  first_byte_timeout: 5s
  handshake_timeout: 10s
  ssh_auth_timeout: 30s
  http_header_timeout: 10s
  http_idle_timeout: 30s
  tunnel_hello_timeout: 10s
  db_startup_timeout: 10s
  # A web UI session with no request for this long ends (never later than its login's
  # certificate).
  web_idle_timeout: 30m
  # Limits; connections over them are closed at once and counted in /metrics.
  max_connections: 100000
  max_connections_per_ip: 10000
  # Unauthenticated connections per source address (an IPv6 /64): the lower of a count and a
  # share (percent) of max_connections.
  max_preauth_connections_per_ip: 64
  max_preauth_connections_percent: 1
  max_concurrent_handshakes: 1024
  # Data-plane worker threads (default: one per core) and IO driver: auto, uring or epoll.
  # workers: 2
  io_driver: auto
  # Kernel TLS for relayed sessions: auto (when the kernel has CONFIG_TLS) or off.
  kernel_tls: auto
  # PROXY protocol headers are honoured only from these networks (load balancers).
  proxy_protocol:
    trusted_cidrs: []
  # Where other appliances' proxies reach this one for proxy peering (not through the load
  # balancer); default: the listen address, or this host's name with the listen port.
  # peer_public_addr: 10.0.0.5:443

# A node agent's SSH service (hop start --roles node --proxy ...).
ssh_service:
  # Deadline for an SSH client's banner, key exchange and authentication.
  auth_timeout: 30s

# An app agent's applications (hop start --roles app --proxy ... also takes --app): tcp:// apps
# relay bytes; http:// and https:// apps are web apps served at https://NAME.<proxy address>.
app_service:
  apps: []
  #  - name: echo
  #    uri: tcp://127.0.0.1:7000
  #    labels: {env: dev}
  #  - name: grafana
  #    uri: http://127.0.0.1:3000
  #    labels: {env: dev}
  #    # public_addr: grafana.example.com
  #    # insecure_skip_verify: false   # https:// upstreams only
  #    rewrite:
  #      headers: ["X-Webauth-User: {{internal.logins}}"]
  #      redirect: [localhost]

# A db agent's databases (hop start --roles db --proxy ... also takes --db).
db_service:
  databases: []
  #  - name: pg
  #    uri: postgres://127.0.0.1:5432
  #    ca_file: /etc/postgresql/ca.crt
  #    labels: {env: dev}
  # `db` resources (hop admin create -f) to serve, by labels.
  resources: []
  #  - labels: {env: dev}
  # What each db.query audit event keeps.
  audit:
    max_statement_bytes: 4096
    parameters: false

# A kube agent's Kubernetes clusters (hop start --roles kube --proxy ... also takes
# --kube-cluster name=dev,kubeconfig=PATH[,context=C][,labels=env=dev]). The agent reaches each
# API server with the kubeconfig's own credentials and impersonates the user Hop allows; users
# reach it with kubectl at https://kube.<proxy address> after `hop kube login NAME`.
kubernetes_service:
  kube_clusters: []
  #  - name: dev
  #    kubeconfig: /etc/hop/dev.kubeconfig   # left out: the service account of the cluster the agent runs in
  #    context: admin@dev                    # default: the kubeconfig's current-context
  #    labels: {env: dev}
"#;
