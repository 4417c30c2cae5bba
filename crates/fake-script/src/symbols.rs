//! Hides some of a loaded library's own exports from `dlsym`, so that a test can script "this
//! NVML lacks nvmlDeviceGetPowerUsage" without building a new library.
//!
//! It renames the symbol in the library's dynamic string table, in memory, from the library's
//! constructor (which runs inside `dlopen`, before anyone looks a symbol up): the symbol's name
//! no longer matches, so `dlsym` fails with "undefined symbol", exactly as with a library that
//! never had it. The library must not call its own exports through the PLT (ours don't).

use std::ffi::c_void;

/// `Elf64_Dyn`: a tag and a value or address.
#[repr(C)]
struct DynamicEntry {
    tag: i64,
    value: u64,
}

struct Found {
    strtab: usize,
    strsz: usize,
    /// The loadable segments: (start, end, flags).
    segments: Vec<(usize, usize, u32)>,
}

struct Search {
    anchor: usize,
    found: Option<Found>,
}

unsafe extern "C" fn visit(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> i32 {
    // SAFETY: dl_iterate_phdr passes a valid info, and `data` is our `Search`.
    let (info, search) = unsafe { (&*info, &mut *data.cast::<Search>()) };
    let bias = info.dlpi_addr as usize;
    // SAFETY: dlpi_phdr points at dlpi_phnum program headers of a loaded object.
    let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let segments: Vec<(usize, usize, u32)> = headers
        .iter()
        .filter(|h| h.p_type == libc::PT_LOAD)
        .map(|h| {
            let start = bias + h.p_vaddr as usize;
            (start, start + h.p_memsz as usize, h.p_flags)
        })
        .collect();
    if !segments
        .iter()
        .any(|&(start, end, _)| (start..end).contains(&search.anchor))
    {
        return 0;
    }
    let Some(dynamic) = headers.iter().find(|h| h.p_type == libc::PT_DYNAMIC) else {
        return 1;
    };
    let mut entry = (bias + dynamic.p_vaddr as usize) as *const DynamicEntry;
    let (mut strtab, mut strsz) = (0usize, 0usize);
    loop {
        // SAFETY: the dynamic section is an array of entries ended by DT_NULL.
        let dyn_entry = unsafe { &*entry };
        match dyn_entry.tag {
            0 => break,                             // DT_NULL
            5 => strtab = dyn_entry.value as usize, // DT_STRTAB
            10 => strsz = dyn_entry.value as usize, // DT_STRSZ
            _ => {}
        }
        // SAFETY: not past DT_NULL yet.
        entry = unsafe { entry.add(1) };
    }
    // glibc relocates DT_STRTAB in place when it loads the object; be right either way.
    if strtab < bias {
        strtab += bias;
    }
    search.found = Some(Found {
        strtab,
        strsz,
        segments,
    });
    1
}

/// Hides `names` among the exports of the library that contains `anchor` (any of its
/// functions). Errors name what could not be done.
pub fn hide(anchor: *const c_void, names: &[String]) -> Result<(), String> {
    if names.is_empty() {
        return Ok(());
    }
    let mut search = Search {
        anchor: anchor as usize,
        found: None,
    };
    // SAFETY: `visit` matches the callback type and only reads what the loader hands it.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut search as *mut Search).cast()) };
    let found = search
        .found
        .ok_or("cannot find this library's dynamic section")?;
    // SAFETY: DT_STRTAB/DT_STRSZ describe the string table mapped in this object.
    let table = unsafe { std::slice::from_raw_parts(found.strtab as *const u8, found.strsz) };
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    for name in names {
        let mut needle = Vec::with_capacity(name.len() + 2);
        needle.push(0);
        needle.extend_from_slice(name.as_bytes());
        needle.push(0);
        let offset = table
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
            .ok_or_else(|| format!("no exported symbol {name}"))?;
        let byte = found.strtab + offset + 1;
        let flags = found
            .segments
            .iter()
            .find(|&&(start, end, _)| (start..end).contains(&byte))
            .map_or(libc::PF_R, |&(_, _, flags)| flags);
        let protection = |writable: bool| {
            let mut p = 0;
            if flags & libc::PF_R != 0 {
                p |= libc::PROT_READ;
            }
            if flags & libc::PF_X != 0 {
                p |= libc::PROT_EXEC;
            }
            if writable || flags & libc::PF_W != 0 {
                p |= libc::PROT_WRITE | libc::PROT_READ;
            }
            p
        };
        let start = byte & !(page - 1);
        // SAFETY: the page belongs to this object's mapping; we make it writable, change one
        // byte of a symbol name, and restore the segment's protection.
        unsafe {
            if libc::mprotect(start as *mut c_void, page, protection(true)) != 0 {
                return Err(format!("mprotect failed while hiding {name}"));
            }
            *(byte as *mut u8) = b'_';
            libc::mprotect(start as *mut c_void, page, protection(false));
        }
    }
    Ok(())
}
