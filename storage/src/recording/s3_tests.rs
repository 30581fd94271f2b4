//! The `s3://` URI rules. The store itself is exercised against an S3 stand-in (moto) in the
//! crate's integration tests.

use super::*;

fn parse(uri: &str) -> Result<S3Location, S3UriError> {
    S3Location::parse(uri)
}

#[test]
fn bucket_prefix_region_and_endpoint() {
    let l = parse(
        "s3://hop-recordings/cluster-1/sessions?region=eu-west-1&endpoint=http://127.0.0.1:5000",
    )
    .unwrap();
    assert_eq!(l.bucket, "hop-recordings");
    assert_eq!(l.prefix, "cluster-1/sessions");
    assert_eq!(l.region.as_deref(), Some("eu-west-1"));
    assert_eq!(l.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
    assert_eq!(parse("s3://bucket").unwrap().prefix, "");
    assert_eq!(parse("s3://bucket/").unwrap().prefix, "");
    assert_eq!(parse("s3://bucket/a/").unwrap().prefix, "a");
}

#[test]
fn refusals_name_what_is_wrong() {
    let cases: &[(&str, &str)] = &[
        ("file:///x", "not an s3://"),
        ("s3:///prefix", "names no bucket"),
        ("s3://Bucket_1/x", "not an S3 bucket name"),
        ("s3://ab", "not an S3 bucket name"),
        ("s3://key:secret@bucket/x", "credentials"),
        ("s3://bucket/a/../b", "prefix"),
        ("s3://bucket/a//b", "prefix"),
        ("s3://bucket/a b", "prefix"),
        (
            "s3://bucket/x?insecure=true",
            "\"insecure\" is not supported",
        ),
        ("s3://bucket/x?region=a&region=b", "given twice"),
        ("s3://bucket/x?region=", "not a region"),
        ("s3://bucket/x?endpoint=ftp://h", "http:// or https://"),
        ("s3://bucket/x?endpoint=http://u:p@h", "http:// or https://"),
        (
            "s3://bucket/x?endpoint=http://h/path",
            "http:// or https://",
        ),
    ];
    for (uri, want) in cases {
        let err = parse(uri).expect_err(uri).to_string();
        assert!(err.contains(want), "{uri}: {err}");
    }
}
