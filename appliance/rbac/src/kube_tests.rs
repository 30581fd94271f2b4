use super::*;

#[test]
fn v7_kinds_validate() {
    let r = KubernetesResource {
        kind: "pod".into(),
        namespace: "*".into(),
        name: "*".into(),
        verbs: vec!["*".into()],
        api_group: None,
    };
    validate_resources(&FieldPath::new("x"), "v7", &[r]).unwrap();
}
