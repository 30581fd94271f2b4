use std::convert::Infallible;

use http_body_util::{Full, StreamBody};
use serde_json::json;

use super::*;

/// A role that shows `default/web-*` only.
fn web_only() -> Visibility {
    Arc::new(|item: &KubeItemRef| {
        item.namespace.as_deref() == Some("default") && item.name.starts_with("web-")
    })
}

fn pod(ns: &str, name: &str) -> Value {
    json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": name, "namespace": ns}, "spec": {}})
}

fn pod_list() -> Value {
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "7"},
        "items": [pod("default", "web-1"), pod("kube-system", "dns-1"), pod("default", "db-1"), pod("default", "web-2")]})
}

fn table() -> Value {
    let row = |ns: &str, n: &str| {
        json!({"cells": [n, "1/1", "Running"], "object": {"kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1", "metadata": {"name": n, "namespace": ns}}})
    };
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "7"},
        "columnDefinitions": [{"name": "Name", "type": "string"}],
        "rows": [row("default", "web-1"), row("kube-system", "dns-1"), row("default", "web-2")]})
}

fn names(v: &Value, list: &str) -> Vec<String> {
    v[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let meta = if list == "rows" {
                &i["object"]["metadata"]
            } else {
                &i["metadata"]
            };
            meta["name"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// A body delivered in `pieces`, one frame each.
fn chunked(
    pieces: Vec<Vec<u8>>,
) -> StreamBody<
    impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + Sync + Unpin,
> {
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = pieces
        .into_iter()
        .map(|p| Ok(Frame::data(Bytes::from(p))))
        .collect();
    StreamBody::new(futures_util::stream::iter(frames))
}

async fn read(body: BoxBody<Bytes, std::io::Error>) -> Result<Vec<u8>, String> {
    body.collect()
        .await
        .map(|c| c.to_bytes().to_vec())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_list_keeps_only_visible_items() {
    let bytes = serde_json::to_vec(&pod_list()).unwrap();
    let pieces = bytes.chunks(7).map(<[u8]>::to_vec).collect();
    let body = filter_any(chunked(pieces), Some("application/json"), false, web_only()).unwrap();
    let out: Value = serde_json::from_slice(&read(body).await.unwrap()).unwrap();
    assert_eq!(names(&out, "items"), ["web-1", "web-2"]);
    assert_eq!(out["metadata"]["resourceVersion"], "7");
}

#[tokio::test]
async fn a_table_keeps_only_visible_rows() {
    let bytes = serde_json::to_vec(&table()).unwrap();
    let ct = "application/json;as=Table;v=v1;g=meta.k8s.io";
    let body = filter_any(Full::new(Bytes::from(bytes)), Some(ct), false, web_only()).unwrap();
    let out: Value = serde_json::from_slice(&read(body).await.unwrap()).unwrap();
    assert_eq!(names(&out, "rows"), ["web-1", "web-2"]);
    assert_eq!(out["columnDefinitions"][0]["name"], "Name");
}

#[test]
fn a_table_row_without_metadata_is_refused() {
    let mut t = table();
    t["rows"][1].as_object_mut().unwrap().remove("object");
    let bytes = serde_json::to_vec(&t).unwrap();
    assert_eq!(
        filter_list(&bytes, &web_only()),
        Err(FilterError::RowWithoutMetadata)
    );
}

#[test]
fn what_is_not_a_json_listing_is_refused() {
    assert_eq!(check_content_type(None), Err(FilterError::NoContentType));
    let pb = "application/vnd.kubernetes.protobuf";
    assert_eq!(
        check_content_type(Some(pb)),
        Err(FilterError::ContentType(pb.into()))
    );
    assert!(check_content_type(Some("application/yaml")).is_err());
    assert!(check_content_type(Some("Application/JSON; charset=utf-8")).is_ok());
    let all = web_only();
    assert!(matches!(
        filter_list(b"\x0ak8s\x00", &all),
        Err(FilterError::NotJson(_))
    ));
    let pod = serde_json::to_vec(&pod("default", "web-1")).unwrap();
    assert_eq!(
        filter_list(&pod, &all),
        Err(FilterError::NotAList("Pod".into()))
    );
    let nameless = br#"{"kind":"PodList","items":[{"metadata":{"namespace":"default"}}]}"#;
    assert_eq!(
        filter_list(nameless, &all),
        Err(FilterError::ItemWithoutName)
    );
    // A Status lists nothing: it passes as it is.
    let status = br#"{"kind":"Status","status":"Failure","code":403}"#;
    assert_eq!(filter_list(status, &all).unwrap(), status.to_vec());
}

#[tokio::test]
async fn an_undecodable_list_ends_the_body_with_an_error_not_its_bytes() {
    let body = filter_any(
        Full::new(Bytes::from_static(b"{\"items\": [")),
        Some("application/json"),
        false,
        web_only(),
    )
    .unwrap();
    let err = read(body).await.unwrap_err();
    assert!(err.contains("not valid JSON"), "{err}");
}

#[tokio::test]
async fn a_listing_over_the_limit_is_refused() {
    let big = vec![b' '; MAX_FILTER_BODY / 2 + 1];
    let body = filter_any(
        chunked(vec![big.clone(), big]),
        Some("application/json"),
        false,
        web_only(),
    )
    .unwrap();
    let err = read(body).await.unwrap_err();
    assert!(err.contains("67108864 bytes"), "{err}");
    let full = Full::new(Bytes::from(vec![b' '; MAX_FILTER_BODY + 1]));
    assert!(matches!(
        filter_any(full, Some("application/json"), false, web_only()),
        Err(FilterError::TooLarge)
    ));
}

fn event(kind: &str, object: Value) -> Vec<u8> {
    let mut e = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
    e.push(b'\n');
    e
}

#[test]
fn watch_events_are_filtered_however_the_bytes_are_cut() {
    let stream = [
        event("ADDED", pod("default", "web-1")),
        event("ADDED", pod("kube-system", "dns-1")),
        event(
            "BOOKMARK",
            json!({"kind": "Pod", "metadata": {"resourceVersion": "9"}}),
        ),
        event("MODIFIED", pod("default", "db-1")),
        event("DELETED", pod("default", "web-2")),
    ]
    .concat();
    let whole = WatchFilter::new(web_only()).push(&stream).unwrap();
    let lines: Vec<Value> = whole
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let seen: Vec<_> = lines.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(seen, ["ADDED", "BOOKMARK", "DELETED"]);
    assert!(!String::from_utf8_lossy(&whole).contains("dns-1"));
    for cut in 0..=stream.len() {
        let mut f = WatchFilter::new(web_only());
        let mut out = f.push(&stream[..cut]).unwrap();
        out.extend(f.push(&stream[cut..]).unwrap());
        f.finish().unwrap();
        assert_eq!(out, whole, "cut at {cut}");
    }
}

#[test]
fn watch_table_events_drop_hidden_rows_and_empty_events() {
    let mut one = table();
    one["rows"].as_array_mut().unwrap().truncate(2);
    let mut hidden = table();
    hidden["rows"] = json!([table()["rows"][1].clone()]);
    let stream = [event("ADDED", one), event("MODIFIED", hidden)].concat();
    let out = WatchFilter::new(web_only()).push(&stream).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("web-1") && !text.contains("dns-1"));
}

#[test]
fn a_bad_watch_stream_is_refused() {
    let mut f = WatchFilter::new(web_only());
    assert!(matches!(
        f.push(b"{\"type\":\"ADDED\"} ]"),
        Err(FilterError::NotJson(_)) | Err(FilterError::ItemWithoutName)
    ));
    let mut f = WatchFilter::new(web_only());
    assert_eq!(
        f.push(b"{\"type\":\"SURPRISE\",\"object\":{}}\n"),
        Err(FilterError::WatchEvent("SURPRISE".into()))
    );
    let mut f = WatchFilter::new(web_only());
    assert!(f.push(b"{\"type\":\"ADDED\",\"obj").unwrap().is_empty());
    assert_eq!(f.finish(), Err(FilterError::TruncatedEvent));
}

#[tokio::test]
async fn a_watch_body_sends_each_visible_event_as_it_arrives() {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    let rx = tokio_stream_of(rx);
    let mut body = filter_any(
        StreamBody::new(rx),
        Some("application/json"),
        true,
        web_only(),
    )
    .unwrap();
    tx.send(Ok(Frame::data(Bytes::from(event(
        "ADDED",
        pod("kube-system", "dns-1"),
    )))))
    .await
    .unwrap();
    tx.send(Ok(Frame::data(Bytes::from(event(
        "ADDED",
        pod("default", "web-1"),
    )))))
    .await
    .unwrap();
    // The visible event arrives while the stream is still open.
    let frame = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let data = frame.into_data().unwrap();
    assert!(std::str::from_utf8(&data).unwrap().contains("web-1"));
    drop(tx);
    assert!(body.frame().await.is_none());
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + Sync + Unpin {
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

#[test]
fn a_gzip_listing_is_refused_with_a_reason() {
    let gz = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0];
    assert_eq!(filter_list(&gz, &web_only()), Err(FilterError::Compressed));
    assert_eq!(
        WatchFilter::new(web_only()).push(&gz),
        Err(FilterError::Compressed)
    );
    assert!(
        FilterError::Compressed
            .to_string()
            .contains("Accept-Encoding")
    );
}

/// A listing over what the process-wide budget has left is refused (never passed through);
/// its bytes, and a filtered listing's, go back to the budget once it is answered.
#[tokio::test]
async fn listings_share_one_byte_budget() {
    let list = serde_json::to_vec(&pod_list()).unwrap();
    let total = list.len() + list.len() / 4;
    let budget = ListingBudget::new(total);
    let out = filter_list_body(Full::new(Bytes::from(list.clone())), &web_only(), &budget)
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&out).contains("dns-1"));
    assert_eq!(budget.available(), total);
    // One listing half read holds its bytes: a second whole one is over what is left.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    let (half, rest) = list.split_at(list.len() / 2);
    tx.send(Ok(Frame::data(Bytes::copy_from_slice(half))))
        .await
        .unwrap();
    let (b, v) = (budget.clone(), web_only());
    let first = tokio::spawn(async move {
        filter_list_body(StreamBody::new(tokio_stream_of(rx)), &v, &b).await
    });
    while budget.available() == total {
        tokio::task::yield_now().await;
    }
    let second = filter_list_body(
        chunked(vec![list[..10].to_vec(), list[10..].to_vec()]),
        &web_only(),
        &budget,
    )
    .await;
    let Err(e @ FilterError::OverBudget { .. }) = second else {
        panic!("a listing over the budget was answered: {second:?}");
    };
    assert!(e.to_string().contains("try again"), "{e}");
    // What the refused one took is back; the first finishes within what is left.
    assert_eq!(budget.available(), total - half.len());
    tx.send(Ok(Frame::data(Bytes::copy_from_slice(rest))))
        .await
        .unwrap();
    drop(tx);
    assert!(first.await.unwrap().is_ok());
    assert_eq!(budget.available(), total);
}

/// Each push scans only the new bytes: the scan's place is kept across pushes, and braces and
/// quotes inside strings do not end an event early.
#[test]
fn a_watch_event_in_many_pieces_is_scanned_once() {
    let tricky = pod("default", r#"web-}{"\"]["#);
    let ev = event("ADDED", tricky);
    let mut f = WatchFilter::new(Arc::new(|_: &KubeItemRef| true));
    let mut out = Vec::new();
    for (i, b) in ev.iter().enumerate() {
        out.extend(f.push(std::slice::from_ref(b)).unwrap());
        if out.is_empty() {
            assert_eq!(f.scan.pos, i + 1, "the scan restarted at byte {i}");
        }
    }
    f.finish().unwrap();
    let got: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(got["object"]["metadata"]["name"], r#"web-}{"\"]["#);
    // Only the newline after the event is held, already scanned.
    assert_eq!((f.buf.as_slice(), f.scan.pos), (&b"\n"[..], 1));
    let mut f = WatchFilter::new(web_only());
    assert!(matches!(f.push(b" 42\n"), Err(FilterError::NotJson(_))));
}

/// A filtered watch holds budget bytes for the part of an event not yet complete, and gives
/// them back once the event is whole; over the budget it refuses.
#[test]
fn a_watch_holds_budget_only_for_its_unfinished_event() {
    let ev = event("ADDED", pod("default", "web-1"));
    let budget = ListingBudget::new(ev.len());
    let mut f = WatchFilter::with_budget(web_only(), budget.clone());
    let (head, tail) = ev.split_at(ev.len() / 2);
    assert!(f.push(head).unwrap().is_empty());
    assert_eq!(budget.available(), ev.len() - head.len());
    assert!(!f.push(tail).unwrap().is_empty());
    // Only the newline after the event is still held.
    assert_eq!(budget.available(), ev.len() - 1);
    let _others = budget.hold(budget.available());
    assert!(matches!(f.push(head), Err(FilterError::OverBudget { .. })));
}
