//! Kubernetes API traffic: the request grammar (`request`, kparse's) and the upgraded
//! exec/attach/port-forward streams ([`stream`]).

pub mod stream;
