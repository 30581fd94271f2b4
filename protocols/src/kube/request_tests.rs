use super::*;

fn ok(method: &str, target: &str) -> KubeRequest {
    parse(method, target).unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

fn err(method: &str, target: &str) -> String {
    match parse(method, target) {
        Ok(r) => panic!("{method} {target} parsed: {r:?}"),
        Err(e) => e.to_string(),
    }
}

/// (verb, group, version, resource, subresource, namespace, name)
type Expect<'a> = (
    KubeVerb,
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
);

fn check(method: &str, target: &str, want: Expect<'_>) {
    let r = ok(method, target);
    let got = (
        r.verb,
        r.api_group.as_str(),
        r.api_version.as_str(),
        r.resource.as_deref(),
        r.subresource.as_deref(),
        r.namespace.as_deref(),
        r.name.as_deref(),
    );
    assert_eq!(got, want, "{method} {target}");
}

use KubeVerb::*;

#[test]
fn core_namespaced_get() {
    let r = ok("GET", "/api/v1/namespaces/default/pods/web-1");
    assert_eq!(r.verb, Get);
    assert_eq!(r.api_group, "");
    assert_eq!(r.api_version, "v1");
    assert_eq!(r.resource.as_deref(), Some("pods"));
    assert_eq!(r.namespace.as_deref(), Some("default"));
    assert_eq!(r.name.as_deref(), Some("web-1"));
    assert_eq!(r.subresource, None);
    assert!(r.is_resource());
    assert!(!r.is_connect());
    assert_eq!(r.rbac_verb(), "get");
}

#[test]
fn what_kubectl_sends() {
    let d = Some("default");
    let cases: &[(&str, &str, Expect<'_>)] = &[
        // kubectl get pods
        (
            "GET",
            "/api/v1/namespaces/default/pods?limit=500",
            (List, "", "v1", Some("pods"), None, d, None),
        ),
        // kubectl get pods -A
        (
            "GET",
            "/api/v1/pods?limit=500",
            (List, "", "v1", Some("pods"), None, None, None),
        ),
        // kubectl get pods -w (list, then watch from its resourceVersion)
        (
            "GET",
            "/api/v1/namespaces/default/pods?resourceVersion=1&watch=true",
            (Watch, "", "v1", Some("pods"), None, d, None),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods?watch=1",
            (Watch, "", "v1", Some("pods"), None, d, None),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods?watch=false",
            (List, "", "v1", Some("pods"), None, d, None),
        ),
        // kubectl get pod web-1 -w
        (
            "GET",
            "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb-1&resourceVersion=0&watch=true",
            (Watch, "", "v1", Some("pods"), None, d, Some("web-1")),
        ),
        // legacy watch prefix
        (
            "GET",
            "/api/v1/watch/namespaces/default/pods",
            (Watch, "", "v1", Some("pods"), None, d, None),
        ),
        (
            "GET",
            "/api/v1/watch/namespaces/default/pods/web-1",
            (Watch, "", "v1", Some("pods"), None, d, Some("web-1")),
        ),
        (
            "GET",
            "/api/v1/watch/pods",
            (Watch, "", "v1", Some("pods"), None, None, None),
        ),
        (
            "GET",
            "/api/v1/watch/namespaces",
            (Watch, "", "v1", Some("namespaces"), None, None, None),
        ),
        // kubectl get ns / get ns default / namespace subresources
        (
            "GET",
            "/api/v1/namespaces?limit=500",
            (List, "", "v1", Some("namespaces"), None, None, None),
        ),
        (
            "GET",
            "/api/v1/namespaces/default",
            (Get, "", "v1", Some("namespaces"), None, None, d),
        ),
        (
            "PUT",
            "/api/v1/namespaces/dev/finalize",
            (
                Update,
                "",
                "v1",
                Some("namespaces"),
                Some("finalize"),
                None,
                Some("dev"),
            ),
        ),
        (
            "PATCH",
            "/api/v1/namespaces/dev/status",
            (
                Patch,
                "",
                "v1",
                Some("namespaces"),
                Some("status"),
                None,
                Some("dev"),
            ),
        ),
        (
            "DELETE",
            "/api/v1/namespaces/dev",
            (
                Delete,
                "",
                "v1",
                Some("namespaces"),
                None,
                None,
                Some("dev"),
            ),
        ),
        // kubectl get secret db-password -o yaml
        (
            "GET",
            "/api/v1/namespaces/default/secrets/db-password",
            (Get, "", "v1", Some("secrets"), None, d, Some("db-password")),
        ),
        // kubectl logs -f web-1
        (
            "GET",
            "/api/v1/namespaces/default/pods/web-1/log?container=main&follow=true",
            (Get, "", "v1", Some("pods"), Some("log"), d, Some("web-1")),
        ),
        // kubectl exec: 1.32 WebSocket GET, 1.20 SPDY POST; both `create`
        (
            "GET",
            "/api/v1/namespaces/default/pods/web-1/exec?command=sh&container=main&stdin=true&stdout=true&tty=true",
            (
                Create,
                "",
                "v1",
                Some("pods"),
                Some("exec"),
                d,
                Some("web-1"),
            ),
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods/web-1/exec?command=sh&command=-c&command=exit+3&stdout=true",
            (
                Create,
                "",
                "v1",
                Some("pods"),
                Some("exec"),
                d,
                Some("web-1"),
            ),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods/web-1/attach?stdin=true",
            (
                Create,
                "",
                "v1",
                Some("pods"),
                Some("attach"),
                d,
                Some("web-1"),
            ),
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods/web-1/portforward",
            (
                Create,
                "",
                "v1",
                Some("pods"),
                Some("portforward"),
                d,
                Some("web-1"),
            ),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods/web-1/portforward",
            (
                Create,
                "",
                "v1",
                Some("pods"),
                Some("portforward"),
                d,
                Some("web-1"),
            ),
        ),
        // kubectl apply / edit / delete
        (
            "POST",
            "/api/v1/namespaces/default/pods?fieldManager=kubectl-client-side-apply",
            (Create, "", "v1", Some("pods"), None, d, None),
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/pods/web-1?fieldManager=kubectl-edit",
            (Patch, "", "v1", Some("pods"), None, d, Some("web-1")),
        ),
        (
            "PUT",
            "/api/v1/namespaces/default/configmaps/c",
            (Update, "", "v1", Some("configmaps"), None, d, Some("c")),
        ),
        (
            "DELETE",
            "/api/v1/namespaces/default/pods/web-1",
            (Delete, "", "v1", Some("pods"), None, d, Some("web-1")),
        ),
        (
            "DELETE",
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
            (DeleteCollection, "", "v1", Some("pods"), None, d, None),
        ),
        (
            "HEAD",
            "/api/v1/namespaces/default/pods/web-1",
            (Get, "", "v1", Some("pods"), None, d, Some("web-1")),
        ),
        // groups
        (
            "GET",
            "/apis/apps/v1/namespaces/kube-system/deployments/coredns",
            (
                Get,
                "apps",
                "v1",
                Some("deployments"),
                None,
                Some("kube-system"),
                Some("coredns"),
            ),
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
            (
                Patch,
                "apps",
                "v1",
                Some("deployments"),
                Some("scale"),
                d,
                Some("web"),
            ),
        ),
        (
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:controller:job-controller",
            (
                Get,
                "rbac.authorization.k8s.io",
                "v1",
                Some("clusterroles"),
                None,
                None,
                Some("system:controller:job-controller"),
            ),
        ),
        (
            "GET",
            "/apis/apps/v1/deployments",
            (List, "apps", "v1", Some("deployments"), None, None, None),
        ),
        (
            "GET",
            "/apis/example.com/v1alpha1/namespaces/x/widgets?watch=true",
            (
                Watch,
                "example.com",
                "v1alpha1",
                Some("widgets"),
                None,
                Some("x"),
                None,
            ),
        ),
        // kubectl auth whoami / can-i
        (
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            (
                Create,
                "authentication.k8s.io",
                "v1",
                Some("selfsubjectreviews"),
                None,
                None,
                None,
            ),
        ),
        (
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            (
                Create,
                "authorization.k8s.io",
                "v1",
                Some("selfsubjectaccessreviews"),
                None,
                None,
                None,
            ),
        ),
        // pod proxy with a path
        (
            "GET",
            "/api/v1/namespaces/default/pods/web-1:8080/proxy/metrics/a",
            (
                Get,
                "",
                "v1",
                Some("pods"),
                Some("proxy"),
                d,
                Some("web-1:8080"),
            ),
        ),
        (
            "GET",
            "/api/v1/namespaces/default/services/https:web:443/proxy/",
            (
                Get,
                "",
                "v1",
                Some("services"),
                Some("proxy"),
                d,
                Some("https:web:443"),
            ),
        ),
        // nodes (cluster-scoped), trailing slash
        (
            "GET",
            "/api/v1/nodes/node-1/",
            (Get, "", "v1", Some("nodes"), None, None, Some("node-1")),
        ),
    ];
    for (method, target, want) in cases {
        check(method, target, *want);
    }
}

#[test]
fn non_resource_requests() {
    for target in [
        "/",
        "/version",
        "/version?timeout=32s",
        "/api",
        "/api/",
        "/api/v1",
        "/apis",
        "/apis/apps",
        "/apis/apps/v1",
        "/openapi/v2",
        "/openapi/v3/api/v1",
        "/healthz",
        "/livez",
        "/readyz/ping",
        "/.well-known/openid-configuration",
        "/metrics",
    ] {
        let r = ok("GET", target);
        assert!(!r.is_resource(), "{target}: {r:?}");
        assert_eq!((r.verb, r.api_version.as_str()), (Get, ""), "{target}");
        assert_eq!((r.namespace, r.name, r.subresource), (None, None, None));
    }
    assert_eq!(ok("POST", "/api").verb, Create);
}

#[test]
fn exec_and_port_forward_are_create_with_rbac_verbs() {
    for (method, sub, rbac) in [
        ("GET", "exec", "exec"),
        ("POST", "exec", "exec"),
        ("GET", "attach", "exec"),
        ("POST", "attach", "exec"),
        ("GET", "portforward", "portforward"),
        ("POST", "portforward", "portforward"),
    ] {
        let r = ok(method, &format!("/api/v1/namespaces/d/pods/p/{sub}"));
        assert_eq!(r.verb, Create);
        assert!(r.is_connect());
        assert_eq!(r.rbac_verb(), rbac, "{method} {sub}");
    }
    // `exec` of something that is not a pod is not a pod stream.
    let r = ok("GET", "/api/v1/namespaces/d/services/s/exec");
    assert!(!r.is_connect());
    assert_eq!((r.verb, r.rbac_verb()), (Get, "get"));
}

#[test]
fn percent_decoding() {
    let r = ok("GET", "/api/v1/namespaces/default/configmaps/a%3Ab");
    assert_eq!(r.name.as_deref(), Some("a:b"));
    let r = ok("GET", "/api/v1/namespaces/d%65fault/pods");
    assert_eq!(r.namespace.as_deref(), Some("default"));
    let r = ok("GET", "/api/v1/namespaces/default/configmaps/caf%C3%A9");
    assert_eq!(r.name.as_deref(), Some("café"));
}

#[test]
fn hostile_segments_are_refused_naming_the_fault() {
    let cases = [
        (
            "/api/v1/namespaces/a%2Fb/pods",
            "path segment 3: an encoded `/` (%2F)",
        ),
        (
            "/api/v1/namespaces/a%2fb/pods",
            "path segment 3: an encoded `/` (%2F)",
        ),
        (
            "/api/v1/namespaces/default/pods/a%00b",
            "path segment 5: a NUL byte",
        ),
        (
            "/api/v1/namespaces/default/pods/a%0Ab",
            "path segment 5: a control character",
        ),
        (
            "/api/v1/namespaces/default/pods/..",
            "path segment 5: `.` or `..`",
        ),
        (
            "/api/v1/namespaces/default/pods/%2E%2E",
            "path segment 5: `.` or `..`",
        ),
        ("/api/v1/namespaces/./pods", "path segment 3: `.` or `..`"),
        ("/api/v1//pods", "path segment 2: empty (two `/` in a row)"),
        (
            "/api/v1/pods/%zz",
            "path segment 3: `%` is not followed by two hex digits",
        ),
        (
            "/api/v1/pods/%4",
            "path segment 3: `%` is not followed by two hex digits",
        ),
        (
            "/api/v1/pods/%C3%28",
            "path segment 3: does not decode to UTF-8",
        ),
        (
            "/api/v1/pods/a b",
            "path segment 3: a raw byte that is not visible ASCII",
        ),
        (
            "/api/v1/pods/a#b",
            "path segment 3: a raw byte that is not visible ASCII",
        ),
        (
            "/api/v1/pods/é",
            "path segment 3: a raw byte that is not visible ASCII",
        ),
    ];
    for (target, want) in cases {
        assert_eq!(err("GET", target), want, "{target}");
    }
}

#[test]
fn names_and_shapes_are_checked() {
    let cases = [
        ("/api/V1/pods", "API version \"V1\" is not valid"),
        (
            "/apis/Apps/v1/deployments",
            "API group \"Apps\" is not valid",
        ),
        ("/api/v1/Pods", "resource \"Pods\" is not valid"),
        (
            "/api/v1/namespaces/default/pods/p/Exec",
            "subresource \"Exec\" is not valid",
        ),
        (
            "/api/v1/namespaces/Default/pods",
            "namespace \"Default\" is not valid",
        ),
        (
            "/api/v1/namespaces/-x/pods",
            "namespace \"-x\" is not valid",
        ),
        (
            "/api/v1/namespaces/under_score",
            "namespace \"under_score\" is not valid",
        ),
        (
            "/api/v1/watch",
            "unexpected request path: `watch` with no resource after it",
        ),
        (
            "/api/v1/proxy/nodes/n",
            "unexpected request path: the legacy `/proxy/` prefix",
        ),
        (
            "/api/v1/namespaces/d/pods/p/exec/more",
            "unexpected request path: segments after",
        ),
    ];
    for (target, want) in cases {
        let e = err("GET", target);
        assert!(e.starts_with(want), "{target}: {e}");
    }
    let long_ns = format!("/api/v1/namespaces/{}/pods", "a".repeat(64));
    assert!(err("GET", &long_ns).contains("must be 1 to 63 characters"));
    assert!(err("POST", "/api/v1/watch/pods").contains("GET only"));
}

#[test]
fn methods() {
    for m in ["CONNECT", "TRACE", "OPTIONS", "get", "PROPFIND", ""] {
        assert!(err(m, "/api/v1/pods").starts_with("HTTP method"), "{m:?}");
    }
    let long = "X".repeat(100);
    let e = err(&long, "/");
    assert!(e.len() < 80, "the method is shortened in the error: {e}");
}

#[test]
fn queries() {
    assert!(err("GET", "/api/v1/pods?watch=maybe").contains("\"watch\": not a boolean"));
    assert!(err("GET", "/api/v1/pods?watch=1&watch=0").contains("given more than once"));
    assert!(err("GET", "/api/v1/pods?fieldSelector=a&fieldSelector=b").contains("more than once"));
    assert!(err("GET", "/api/v1/pods?x=%zz").contains("does not decode"));
    let e = err(
        "GET",
        "/api/v1/pods?fieldSelector=metadata.name%3Da,metadata.name%3Db",
    );
    assert!(
        e.contains("metadata.name is required more than once"),
        "{e}"
    );
    assert!(err("GET", "/api/v1/pods?fieldSelector=metadata.name%3D").contains("empty"));
    // A name from the query obeys the rules of a path segment (found by the fuzzer).
    for bad in ["a%2Fb", "..", "a%00", "a%0Ab"] {
        let e = err(
            "GET",
            &format!("/api/v1/pods?watch=1&fieldSelector=metadata.name%3D{bad}"),
        );
        assert!(
            e.starts_with("query parameter \"fieldSelector\": "),
            "{bad}: {e}"
        );
    }
    // A selector that does not pin a name leaves the collection a collection.
    let r = ok(
        "GET",
        "/api/v1/pods?fieldSelector=status.phase%3DRunning,metadata.name!%3Dx",
    );
    assert_eq!(r.name, None);
    let r = ok("GET", "/api/v1/pods?fieldSelector=metadata.name%3D%3Dweb-1");
    assert_eq!(r.name.as_deref(), Some("web-1"));
    // ... but a named object keeps its own name whatever the selector says.
    let r = ok(
        "GET",
        "/api/v1/namespaces/d/pods/a?fieldSelector=metadata.name%3Db&watch=1",
    );
    assert_eq!((r.verb, r.name.as_deref()), (Get, Some("a")));
    // Other parameters are not this parser's business.
    ok(
        "GET",
        "/api/v1/pods?labelSelector=a%20in%20(b)&limit=5&continue=xyz&pretty=",
    );
}

/// Hop and the API server read a query alike, or Hop refuses it: Go's `URL.Query` drops pairs
/// with a raw `;` and takes the first of repeated values; the API server's booleans are true
/// unless `0` or `false` (so `watch=f` watches).
#[test]
fn queries_the_api_server_would_read_otherwise_are_refused() {
    for spelled in ["f", "F", "t", "yes", "", "on"] {
        let target = format!("/api/v1/pods?watch={spelled}");
        assert!(err("GET", &target).contains("not a boolean"), "{spelled:?}");
    }
    for (spelled, verb) in [
        ("TRUE", KubeVerb::Watch),
        ("False", KubeVerb::List),
        ("0", KubeVerb::List),
    ] {
        assert_eq!(
            ok("GET", &format!("/api/v1/pods?watch={spelled}")).verb,
            verb
        );
    }
    let exec = "/api/v1/namespaces/default/pods/web-1/exec?command=sh&stdin=true";
    assert!(
        err("GET", &format!("{exec}&container=a&container=b"))
            .contains("\"container\": given more than once")
    );
    assert!(err("GET", &format!("{exec}&tty=yes")).contains("\"tty\": not a boolean"));
    assert!(err("GET", &format!("{exec}&tty=true&tty=false")).contains("more than once"));
    assert!(err("GET", &format!("{exec};&command=ls")).contains("raw `;`"));
    assert!(err("GET", "/api/v1/pods?watch=1;x=2").contains("raw `;`"));
    // What kubectl sends still parses: repeated commands, escaped `;`.
    let r = ok(
        "POST",
        &format!("{exec}&command=echo%3Bx&command=-c&stdout=true&tty=true"),
    );
    assert_eq!(r.rbac_verb(), "exec");
}

#[test]
fn limits() {
    let e = err(
        "GET",
        &format!("/api/v1/pods?{}", "a".repeat(MAX_TARGET_LEN)),
    );
    assert!(e.contains("over the limit of"), "{e}");
    let e = err(
        "GET",
        &format!("/api/v1/namespaces/d/pods/{}", "a".repeat(254)),
    );
    assert_eq!(e, "path segment 5 is 254 bytes, over the limit of 253");
    ok(
        "GET",
        &format!("/api/v1/namespaces/d/pods/{}", "a".repeat(253)),
    );
    // Decoding counts: 254 encoded bytes decode to 253 or fewer.
    ok(
        "GET",
        &format!("/api/v1/namespaces/d/pods/{}%41", "a".repeat(252)),
    );
    let e = err("GET", &"/a".repeat(MAX_SEGMENTS + 1));
    assert_eq!(e, "request path has more than 64 segments");
    assert_eq!(
        err("GET", "api/v1"),
        "request target must be a path starting with `/`"
    );
    assert_eq!(
        err("GET", ""),
        "request target must be a path starting with `/`"
    );
    assert_eq!(
        err("GET", "https://x/api"),
        "request target must be a path starting with `/`"
    );
}

#[test]
fn every_prefix_of_real_targets_parses_or_errs_without_panic() {
    let targets = [
        "/api/v1/namespaces/default/pods/web-1/exec?command=sh&stdin=true&tty=true",
        "/apis/apps/v1/watch/namespaces/kube-system/deployments/coredns?fieldSelector=metadata.name%3Dx",
        "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb-1&watch=true",
        "/api/v1/namespaces/default/pods/web-1:80/proxy/a/b%2Fc",
    ];
    for t in targets {
        for end in 0..=t.len() {
            let Some(prefix) = t.get(..end) else { continue };
            for m in ["GET", "POST", "DELETE"] {
                let _ = parse(m, prefix);
                crate::invariants::kube_request(format!("{m} {prefix}").as_bytes());
            }
        }
    }
}
