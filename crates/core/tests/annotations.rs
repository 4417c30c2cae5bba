//! Span annotations (memory delta, tensor shapes) through the recorder and collector, with
//! exact values in the summary and the detailed steps.

use std::sync::Arc;

use serde_json::Value;
use vllm_profiler_core::{Session, Settings};

fn session() -> Arc<Session> {
    Session::new(
        4343,
        1,
        Settings {
            max_history: 100,
            ..Settings::default()
        },
    )
}

/// The detailed steps file as raw JSON (to see which keys are present) and typed.
fn exported_steps(s: &Session) -> (Value, vllm_profiler_format::DetailedSteps) {
    let dir = tempfile::tempdir().unwrap();
    s.export(dir.path()).unwrap();
    let bytes = std::fs::read(dir.path().join("detailed_steps_4343.json")).unwrap();
    (
        serde_json::from_slice(&bytes).unwrap(),
        serde_json::from_slice(&bytes).unwrap(),
    )
}

const SHAPES_A: &[u8] = br#"{"input_shapes": [[8, 512, 768]], "output_shapes": [[8, 512, 768]]}"#;
const SHAPES_B: &[u8] = br#"{"input_shapes": [[1, 2]]}"#;

#[test]
fn memory_deltas_sum_per_step_first_shapes_kept_and_average_over_annotated_calls() {
    let s = session();
    let mut rec = s.register_thread(1);
    // Step 0: "attn" called three times: +1.5 MiB with shapes A, unannotated, +2.25 MiB with
    // shapes B (not kept: A came first). "mlp" once with NaN (no delta) and no shapes.
    let step = rec.step_begin(8, 512).unwrap();
    let a = rec.span_begin(b"attn").unwrap();
    rec.span_end_annotated(a, 1.5, Some(SHAPES_A)).unwrap();
    let a = rec.span_begin(b"attn").unwrap();
    rec.span_end(a).unwrap();
    let a = rec.span_begin(b"attn").unwrap();
    rec.span_end_annotated(a, 2.25, Some(SHAPES_B)).unwrap();
    let m = rec.span_begin(b"mlp").unwrap();
    rec.span_end_annotated(m, f32::NAN, None).unwrap();
    rec.step_end(step).unwrap();
    // Step 1: "attn" first without shapes but -0.75 MiB, then shapes B with an infinite delta
    // (none): B is the first shapes of this step. "mlp" with +64.2 MiB.
    let step = rec.step_begin(8, 512).unwrap();
    let a = rec.span_begin(b"attn").unwrap();
    rec.span_end_annotated(a, -0.75, None).unwrap();
    let a = rec.span_begin(b"attn").unwrap();
    rec.span_end_annotated(a, f32::INFINITY, Some(SHAPES_B))
        .unwrap();
    let m = rec.span_begin(b"mlp").unwrap();
    rec.span_end_annotated(m, 64.2, Some(b"{}")).unwrap();
    rec.step_end(step).unwrap();

    let summary = s.summary(None).unwrap();
    let attn = &summary.layer_performance["attn"];
    assert_eq!(attn.call_count, 5);
    // Three of the five calls carried a delta: (1.5 + 2.25 - 0.75) / 3.
    assert_eq!(attn.avg_memory_delta_mb, Some(1.0));
    assert_eq!(
        summary.layer_performance["mlp"].avg_memory_delta_mb,
        Some(64.2)
    );
    let last = s.summary(Some(1)).unwrap();
    assert_eq!(
        last.layer_performance["attn"].avg_memory_delta_mb,
        Some(-0.75)
    );
    assert_eq!(last.layer_performance["attn"].call_count, 2);

    let (raw, steps) = exported_steps(&s);
    let step0 = &steps.detailed_steps[0].layer_timings;
    assert_eq!(step0["attn"].call_count, 3);
    assert_eq!(step0["attn"].memory_delta_mb, Some(3.75));
    assert_eq!(step0["attn"].input_shapes, Some(vec![vec![8, 512, 768]]));
    assert_eq!(step0["attn"].output_shapes, Some(vec![vec![8, 512, 768]]));
    assert_eq!(step0["mlp"].memory_delta_mb, None);
    assert_eq!(step0["mlp"].input_shapes, None);
    let mlp0 = raw["detailed_steps"][0]["layer_timings"]["mlp"]
        .as_object()
        .unwrap();
    for key in ["memory_delta_mb", "input_shapes", "output_shapes"] {
        assert!(!mlp0.contains_key(key), "{key} present in {mlp0:?}");
    }

    let step1 = &steps.detailed_steps[1].layer_timings;
    assert_eq!(step1["attn"].memory_delta_mb, Some(-0.75));
    assert_eq!(step1["attn"].input_shapes, Some(vec![vec![1, 2]]));
    assert_eq!(step1["attn"].output_shapes, None);
    let attn1 = raw["detailed_steps"][1]["layer_timings"]["attn"]
        .as_object()
        .unwrap();
    assert!(!attn1.contains_key("output_shapes"));
    // Given as f32, shown with f32 precision: 64.2, not 64.19999694824219.
    assert_eq!(step1["mlp"].memory_delta_mb, Some(64.2));
    assert_eq!(
        raw["detailed_steps"][1]["layer_timings"]["mlp"]["memory_delta_mb"],
        serde_json::json!(64.2)
    );
    assert_eq!(step1["mlp"].input_shapes, None, "{{}} carries no shapes");
}

#[test]
fn without_annotations_no_key_appears() {
    let s = session();
    let mut rec = s.register_thread(1);
    let step = rec.step_begin(1, 1).unwrap();
    let a = rec.span_begin(b"layer").unwrap();
    rec.span_end(a).unwrap();
    rec.step_end(step).unwrap();
    let summary = serde_json::to_value(s.summary(None).unwrap()).unwrap();
    assert!(summary["layer_performance"]["layer"]
        .get("avg_memory_delta_mb")
        .is_none());
    let (raw, _) = exported_steps(&s);
    let layer = raw["detailed_steps"][0]["layer_timings"]["layer"]
        .as_object()
        .unwrap();
    let mut keys: Vec<&str> = layer.keys().map(String::as_str).collect();
    keys.sort_unstable();
    // Annotations are absent keys; device time is always there, null without a device.
    assert_eq!(
        keys,
        [
            "call_count",
            "depth",
            "duration_ms",
            "gpu_duration_ms",
            "parent"
        ]
    );
}

#[test]
fn bad_shapes_still_end_the_span_with_its_memory_delta() {
    let s = session();
    let mut rec = s.register_thread(1);
    let step = rec.step_begin(1, 1).unwrap();
    let a = rec.span_begin(b"layer").unwrap();
    let err = rec
        .span_end_annotated(a, 4.0, Some(br#"{"input_shapes": [[1]], "dtype": 1}"#))
        .unwrap_err();
    assert_eq!(err.code(), -2);
    let message = err.to_string();
    assert!(message.contains("unknown field `dtype`"), "{message}");
    assert!(message.contains("the span was ended"), "{message}");
    // Ended: a second end is an unknown handle.
    assert_eq!(rec.span_end(a).unwrap_err().code(), -3);
    for bad in [
        &b"{\"input_shapes\": [[\xff]]}"[..],
        br#"{"output_shapes": [[-3]]}"#,
        b"not json",
    ] {
        let b = rec.span_begin(b"layer").unwrap();
        assert_eq!(
            rec.span_end_annotated(b, 1.0, Some(bad))
                .unwrap_err()
                .code(),
            -2
        );
    }
    assert_eq!((rec.open_counts()).1, 0, "every span was ended");
    // An unknown handle ends nothing and validates nothing.
    assert_eq!(
        rec.span_end_annotated(12345, 1.0, Some(b"bad"))
            .unwrap_err()
            .code(),
        -3
    );
    rec.step_end(step).unwrap();

    let summary = s.summary(None).unwrap();
    let layer = &summary.layer_performance["layer"];
    assert_eq!(layer.call_count, 4);
    assert_eq!(layer.avg_memory_delta_mb, Some(1.75));
    let (_, steps) = exported_steps(&s);
    let timing = &steps.detailed_steps[0].layer_timings["layer"];
    assert_eq!(timing.memory_delta_mb, Some(7.0));
    assert_eq!(timing.input_shapes, None);
    assert_eq!(timing.output_shapes, None);
}

#[test]
fn spans_closed_by_their_parent_or_step_carry_no_annotations() {
    let s = session();
    let mut rec = s.register_thread(1);
    let step = rec.step_begin(1, 1).unwrap();
    let outer = rec.span_begin(b"outer").unwrap();
    rec.span_begin(b"inner").unwrap();
    rec.span_end_annotated(outer, 3.0, Some(SHAPES_B)).unwrap();
    rec.span_begin(b"left_open").unwrap();
    rec.step_end(step).unwrap();
    let (_, steps) = exported_steps(&s);
    let layers = &steps.detailed_steps[0].layer_timings;
    assert_eq!(layers["outer"].memory_delta_mb, Some(3.0));
    assert_eq!(layers["outer"].input_shapes, Some(vec![vec![1, 2]]));
    for name in ["inner", "left_open"] {
        assert_eq!(layers[name].memory_delta_mb, None, "{name}");
        assert_eq!(layers[name].input_shapes, None, "{name}");
    }
    assert_eq!(s.summary(None).unwrap().counters.auto_closed_spans, 2);
}

#[test]
fn shapes_do_not_use_up_span_names_and_whitespace_variants_share_one_entry() {
    let s = session();
    let mut rec = s.register_thread(1);
    let step = rec.step_begin(1, 1).unwrap();
    for i in 0..3 {
        let a = rec.span_begin(b"layer").unwrap();
        let spaced = format!(r#"{{ "input_shapes" : [[1, 2]] {} }}"#, " ".repeat(i));
        rec.span_end_annotated(a, 0.0, Some(spaced.as_bytes()))
            .unwrap();
    }
    rec.step_end(step).unwrap();
    assert_eq!(s.shapes().snapshot().len(), 1);
    assert_eq!(&*s.shapes().snapshot()[0], r#"{"input_shapes":[[1,2]]}"#);
    assert_eq!(s.interner().snapshot().len(), 1, "only the span name");
}
