//! Span names (and span shapes) interned to small ids, so the hot path carries a `u32` instead
//! of a string.

use std::sync::Arc;

use parking_lot::RwLock;
use rustc_hash::FxHashMap;

use crate::error::{ProfilerError, Result};

/// Longest span name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 1024;
/// Most distinct span names per process; protects memory from names built with counters in them.
pub const MAX_NAMES: usize = 65_536;
/// Longest canonical shapes text accepted, in bytes (the raw `shapes_json` limit).
pub const MAX_SHAPES_LEN: usize = 4096;
/// Most distinct shapes per process (dynamic batch sizes make many).
pub const MAX_SHAPES: usize = 65_536;
/// Most bytes of distinct shapes text per process.
pub const MAX_SHAPES_BYTES: usize = 16 << 20;

/// Id of an interned string. `NameId::NONE` stands for "none" (no parent span, no shapes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct NameId(pub u32);

impl NameId {
    pub const NONE: NameId = NameId(u32::MAX);

    /// Whether this id is none or names an entry of a table of `len` entries (what a journal's
    /// ids must pass).
    pub(crate) fn is_known_in(self, len: usize) -> bool {
        self == NameId::NONE || (self.0 as usize) < len
    }
}

/// What one table holds: its limits, and its error messages (static, so that an error costs no
/// allocation and says which table refused).
#[derive(Debug)]
pub struct InternKind {
    pub max_len: usize,
    pub max_entries: usize,
    pub max_total_bytes: usize,
    pub empty: &'static str,
    pub not_utf8: &'static str,
    pub too_long: &'static str,
    pub too_many: &'static str,
    pub too_many_bytes: &'static str,
}

/// The span names table.
pub const SPAN_NAMES: InternKind = InternKind {
    max_len: MAX_NAME_LEN,
    max_entries: MAX_NAMES,
    // 65536 names of at most 1024 bytes: the count limit binds first.
    max_total_bytes: usize::MAX,
    empty: "span name is empty",
    not_utf8: "span name is not valid UTF-8",
    too_long: "span name longer than 1024 bytes",
    too_many: "more than 65536 distinct span names",
    too_many_bytes: "more distinct span name text than allowed",
};

/// The table of span shapes (canonical JSON of `format::SpanShapes`), apart from the names so
/// that shapes cannot use up the span names.
pub const SHAPES: InternKind = InternKind {
    max_len: MAX_SHAPES_LEN,
    max_entries: MAX_SHAPES,
    max_total_bytes: MAX_SHAPES_BYTES,
    empty: "shapes are empty",
    not_utf8: "shapes are not valid UTF-8",
    too_long: "shapes longer than 4096 bytes",
    too_many: "more than 65536 distinct shapes; the span was ended, without shapes",
    too_many_bytes: "more than 16 MiB of distinct shapes; the span was ended, without shapes",
};

/// A process-wide table of strings. Written only when a thread meets a string for the first
/// time.
pub struct Interner {
    kind: &'static InternKind,
    table: RwLock<InternTable>,
}

impl Default for Interner {
    /// The span names table.
    fn default() -> Self {
        Interner::new(&SPAN_NAMES)
    }
}

#[derive(Default)]
struct InternTable {
    by_name: FxHashMap<Arc<str>, NameId>,
    names: Vec<Arc<str>>,
    total_bytes: usize,
}

impl Interner {
    /// An empty table of `kind`.
    pub fn new(kind: &'static InternKind) -> Self {
        Interner {
            kind,
            table: RwLock::default(),
        }
    }

    /// Interns `bytes`, checking that it is usable (not empty, UTF-8, within the limits).
    pub fn intern(&self, bytes: &[u8]) -> Result<NameId> {
        let kind = self.kind;
        if bytes.is_empty() {
            return Err(ProfilerError::InvalidArgument(kind.empty));
        }
        if bytes.len() > kind.max_len {
            return Err(ProfilerError::LimitExceeded(kind.too_long));
        }
        let name = std::str::from_utf8(bytes)
            .map_err(|_| ProfilerError::InvalidArgument(kind.not_utf8))?;
        if let Some(id) = self.table.read().by_name.get(name) {
            return Ok(*id);
        }
        let mut table = self.table.write();
        if let Some(id) = table.by_name.get(name) {
            return Ok(*id);
        }
        if table.names.len() >= kind.max_entries {
            return Err(ProfilerError::LimitExceeded(kind.too_many));
        }
        if kind.max_total_bytes - table.total_bytes < name.len() {
            return Err(ProfilerError::LimitExceeded(kind.too_many_bytes));
        }
        let id = NameId(table.names.len() as u32);
        let name: Arc<str> = Arc::from(name);
        table.total_bytes += name.len();
        table.names.push(name.clone());
        table.by_name.insert(name, id);
        Ok(id)
    }

    /// The string of `id`; `None` for `NameId::NONE` or an id this table never gave out.
    pub fn resolve(&self, id: NameId) -> Option<Arc<str>> {
        self.table.read().names.get(id.0 as usize).cloned()
    }

    /// How many strings the table holds (the next id).
    pub fn len(&self) -> usize {
        self.table.read().names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The strings of ids `from` and up, in id order.
    pub fn since(&self, from: usize) -> Vec<Arc<str>> {
        let table = self.table.read();
        table
            .names
            .get(from..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    /// A snapshot of every string, indexed by id, for exporters.
    pub fn snapshot(&self) -> Vec<Arc<str>> {
        self.table.read().names.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_same_id_and_resolves_back() {
        let interner = Interner::default();
        let a = interner.intern(b"model.layers.0").unwrap();
        let b = interner.intern(b"model.layers.1").unwrap();
        assert_ne!(a, b);
        assert_eq!(interner.intern(b"model.layers.0").unwrap(), a);
        assert_eq!(&*interner.resolve(b).unwrap(), "model.layers.1");
        assert!(interner.resolve(NameId::NONE).is_none());
    }

    #[test]
    fn rejects_bad_names_with_their_reason() {
        let interner = Interner::default();
        assert_eq!(interner.intern(b"").unwrap_err().code(), -2);
        assert_eq!(interner.intern(&[0xff, 0xfe]).unwrap_err().code(), -2);
        assert_eq!(interner.intern(&[b'a'; 1025]).unwrap_err().code(), -7);
        assert!(interner.intern(&[b'a'; 1024]).is_ok());
    }

    #[test]
    fn shapes_table_is_separate_and_says_shapes() {
        let names = Interner::default();
        let shapes = Interner::new(&SHAPES);
        let s = shapes.intern(br#"{"input_shapes":[[1]]}"#).unwrap();
        assert_eq!(s, NameId(0));
        assert_eq!(names.intern(b"model").unwrap(), NameId(0), "own numbering");
        assert!(shapes.intern(&[b'1'; 4096]).is_ok());
        let err = shapes.intern(&[b'1'; 4097]).unwrap_err();
        assert_eq!(err.code(), -7);
        assert_eq!(
            err.to_string(),
            "limit exceeded: shapes longer than 4096 bytes"
        );
        assert!(shapes
            .intern(&[0xff])
            .unwrap_err()
            .to_string()
            .contains("shapes"));
    }

    #[test]
    fn shapes_table_stops_at_its_byte_budget() {
        static TINY: InternKind = InternKind {
            max_len: 8,
            max_entries: 100,
            max_total_bytes: 10,
            ..SHAPES
        };
        let table = Interner::new(&TINY);
        assert!(table.intern(b"12345678").is_ok());
        assert!(table.intern(b"12").is_ok());
        assert_eq!(
            table.intern(b"12").unwrap(),
            NameId(1),
            "known: no new bytes"
        );
        let err = table.intern(b"3").unwrap_err();
        assert!(
            err.to_string().contains("16 MiB of distinct shapes"),
            "{err}"
        );
    }
}
