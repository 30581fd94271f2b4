use super::*;

fn ok(method: &str, target: &str) -> KubeRequest {
    parse(method, target).unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

#[test]
fn core_namespaced_get() {
    let r = ok("GET", "/api/v1/namespaces/default/pods/web-1");
    assert_eq!(r.verb, KubeVerb::Get);
    assert_eq!(r.api_group, "");
    assert_eq!(r.api_version, "v1");
    assert_eq!(r.resource.as_deref(), Some("pods"));
    assert_eq!(r.namespace.as_deref(), Some("default"));
    assert_eq!(r.name.as_deref(), Some("web-1"));
    assert_eq!(r.subresource, None);
    assert!(r.is_resource());
}
