//! Span names interned to small ids, so the hot path carries a `u32` instead of a string.

use std::sync::Arc;

use parking_lot::RwLock;
use rustc_hash::FxHashMap;

use crate::error::{ProfilerError, Result};

/// Longest span name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 1024;
/// Most distinct span names per process; protects memory from names built with counters in them.
pub const MAX_NAMES: usize = 65_536;

/// Id of a span name. `NameId::NONE` stands for "no name" (a span at the top of a step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NameId(pub u32);

impl NameId {
    pub const NONE: NameId = NameId(u32::MAX);
}

/// The process-wide name table. Written only when a thread meets a name for the first time.
#[derive(Default)]
pub struct Interner {
    table: RwLock<InternTable>,
}

#[derive(Default)]
struct InternTable {
    by_name: FxHashMap<Arc<str>, NameId>,
    names: Vec<Arc<str>>,
}

impl Interner {
    /// Interns `bytes`, checking that it is a usable name.
    pub fn intern(&self, bytes: &[u8]) -> Result<NameId> {
        if bytes.is_empty() {
            return Err(ProfilerError::InvalidArgument("span name is empty"));
        }
        if bytes.len() > MAX_NAME_LEN {
            return Err(ProfilerError::LimitExceeded(
                "span name longer than 1024 bytes",
            ));
        }
        let name = std::str::from_utf8(bytes)
            .map_err(|_| ProfilerError::InvalidArgument("span name is not valid UTF-8"))?;
        if let Some(id) = self.table.read().by_name.get(name) {
            return Ok(*id);
        }
        let mut table = self.table.write();
        if let Some(id) = table.by_name.get(name) {
            return Ok(*id);
        }
        if table.names.len() >= MAX_NAMES {
            return Err(ProfilerError::LimitExceeded(
                "more than 65536 distinct span names",
            ));
        }
        let id = NameId(table.names.len() as u32);
        let name: Arc<str> = Arc::from(name);
        table.names.push(name.clone());
        table.by_name.insert(name, id);
        Ok(id)
    }

    /// The name of `id`; `None` for `NameId::NONE` or an id this table never gave out.
    pub fn resolve(&self, id: NameId) -> Option<Arc<str>> {
        self.table.read().names.get(id.0 as usize).cloned()
    }

    /// A snapshot of every name, indexed by id, for exporters.
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
}
