//! The id checks a journal's snapshot or batch must pass before it is folded in: every id
//! names an entry of its table, and the totals hold together.

use super::{Batch, State};
use crate::event::Event;
use crate::journal_kernels;
use crate::kept::{KeptLayer, KeptStep};
use crate::names::NameId;
use crate::session::Session;
use crate::torch_ops;

impl State {
    /// Whether every id names an entry of its table and the totals hold together.
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        let (names, shapes) = (self.names.len(), self.shapes.len());
        let layer_ok = |l: &KeptLayer| {
            l.name.is_known_in(names)
                && l.name != NameId::NONE
                && l.parent.is_known_in(names)
                && l.shapes.is_known_in(shapes)
        };
        if !self.history.iter().all(|k| k.layers.iter().all(layer_ok)) {
            return Err("a kept step names a layer it does not hold".into());
        }
        if !self.pending.iter().all(|(_, _, layers, kernels)| {
            layers.iter().all(layer_ok)
                && (kernels.iter()).all(|k| journal_kernels::step_ids_are_known(k, names))
        }) {
            return Err("a step in progress names a layer it does not hold".into());
        }
        let step_kernels_ok = |k: &KeptStep| {
            (k.kernels.iter()).all(|k| journal_kernels::step_ids_are_known(k, names))
        };
        if !self.history.iter().all(step_kernels_ok) || !self.kernels.ids_are_known(names, shapes) {
            return Err("a kernel names a kernel or launch it does not hold".into());
        }
        if !self
            .trace_spans
            .iter()
            .all(|s| s.name.is_known_in(names) && s.name != NameId::NONE)
        {
            return Err("a traced span names a layer it does not hold".into());
        }
        if !self.torch_ops.ids_are_known(names) {
            return Err("a torch op window names an op it does not hold".into());
        }
        if self.totals.layers.len() > names {
            return Err("more layer totals than layer names".into());
        }
        if self.totals.total_steps > 0 && self.totals.min_ns > self.totals.max_ns {
            return Err("the shortest step is longer than the longest".into());
        }
        Ok(())
    }
}

impl Session {
    /// Whether a batch's events name only ids the tables will hold once its names are in.
    pub(crate) fn check(&self, batch: &Batch) -> std::result::Result<(), String> {
        let names = self.interner.len() + batch.names.len();
        let shapes = self.shapes.len() + batch.shapes.len();
        let ok = batch.events.iter().all(|(_, event)| match event {
            Event::Span(span) => {
                span.name != NameId::NONE
                    && span.name.is_known_in(names)
                    && span.parent.is_known_in(names)
                    && span.shapes.is_known_in(shapes)
            }
            Event::Step(_) => true,
            Event::Gpu(gpu) => gpu.name.is_known_in(names),
            Event::Kernel(kernel) => journal_kernels::event_ids_are_known(kernel, names, shapes),
        });
        let ok = ok && (batch.windows.iter()).all(|w| torch_ops::window_ids_are_known(w, names));
        if ok {
            Ok(())
        } else {
            Err("a batch names a layer or shapes it does not hold".into())
        }
    }
}
