//! A forensic scan of a process's readable memory (`/proc/PID/maps` and
//! `/proc/PID/mem`; this process's own, or another's) for 64-byte runs of data the
//! caller knows only in masked form.
//!
//! The caller passes each secret XOR-ed with a 64-byte key that repeats from the secret's
//! first byte; blocks at offsets 0, 64, 128, ... are the needles. Memory is compared in the
//! masked domain (`memory ^ key == masked block`), so the scan itself never writes a
//! plaintext copy of a needle anywhere, and cannot find its own references. Blocks with
//! fewer than [`MIN_DISTINCT`] distinct byte values (runs of zeros, flat image borders) are
//! not used, because they would match unrelated memory.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use zeroize::Zeroize;

use crate::error::{Error, Result};

/// Needle length in bytes.
pub const BLOCK: usize = 64;
/// Least number of distinct byte values a block needs to be used as a needle.
pub const MIN_DISTINCT: usize = 12;
/// Bytes read from `/proc/self/mem` at a time (plus `BLOCK - 1` of overlap).
const CHUNK: usize = 1 << 20;
/// log2 of the prefilter's bit count.
const FILTER_BITS: u32 = 22;

/// One place where a needle was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// Which secret (index into the caller's list) the block belongs to.
    pub secret: usize,
    /// Block number within that secret.
    pub block: usize,
    /// Virtual address of the run.
    pub address: usize,
    /// The mapping's name from `/proc/self/maps` (`[heap]`, a file, or empty).
    pub mapping: String,
}

/// What a scan covered and found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Every run found.
    pub hits: Vec<Hit>,
    /// Needles used, per secret.
    pub needles: Vec<usize>,
    /// Bytes read and compared.
    pub bytes_scanned: u64,
    /// Bytes of readable mappings that the kernel refused to read.
    pub bytes_unreadable: u64,
    /// Mappings visited.
    pub regions: usize,
}

struct Needles {
    key: [u8; BLOCK],
    key_prefix: u64,
    blocks: Vec<[u8; BLOCK]>,
    origin: Vec<(usize, usize)>,
    filter: Vec<u64>,
    index: HashMap<u64, Vec<u32>>,
}

fn bucket(masked_prefix: u64) -> usize {
    (masked_prefix.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - FILTER_BITS)) as usize
}

impl Needles {
    fn new(masked: &[&[u8]], key: &[u8]) -> Result<Needles> {
        let key: [u8; BLOCK] = key
            .try_into()
            .map_err(|_| Error::Invalid(format!("the mask key must be {BLOCK} bytes")))?;
        let mut needles = Needles {
            key,
            key_prefix: u64::from_ne_bytes([
                key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
            ]),
            blocks: Vec::new(),
            origin: Vec::new(),
            filter: vec![0u64; (1usize << FILTER_BITS) / 64],
            index: HashMap::new(),
        };
        for (secret, bytes) in masked.iter().enumerate() {
            for (block, chunk) in bytes.chunks_exact(BLOCK).enumerate() {
                let mut seen = [false; 256];
                for (m, k) in chunk.iter().zip(key.iter()) {
                    seen[usize::from(m ^ k)] = true;
                }
                let distinct = seen.iter().filter(|&&s| s).count();
                seen.zeroize();
                if distinct < MIN_DISTINCT {
                    continue;
                }
                let mut masked_block = [0u8; BLOCK];
                masked_block.copy_from_slice(chunk);
                let prefix = u64::from_ne_bytes([
                    chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
                ]);
                let id = u32::try_from(needles.blocks.len())
                    .map_err(|_| Error::Invalid("too many needles".into()))?;
                needles.blocks.push(masked_block);
                needles.origin.push((secret, block));
                let b = bucket(prefix);
                needles.filter[b / 64] |= 1 << (b % 64);
                needles.index.entry(prefix).or_default().push(id);
            }
        }
        Ok(needles)
    }

    /// Calls `found(offset, needle)` for every run of a needle in `data`.
    fn search(&self, data: &[u8], mut found: impl FnMut(usize, usize)) {
        if data.len() < BLOCK {
            return;
        }
        for i in 0..=data.len() - BLOCK {
            let word = u64::from_ne_bytes([
                data[i],
                data[i + 1],
                data[i + 2],
                data[i + 3],
                data[i + 4],
                data[i + 5],
                data[i + 6],
                data[i + 7],
            ]) ^ self.key_prefix;
            let b = bucket(word);
            if self.filter[b / 64] & (1 << (b % 64)) == 0 {
                continue;
            }
            let Some(ids) = self.index.get(&word) else {
                continue;
            };
            let run = &data[i..i + BLOCK];
            for &id in ids {
                let block = &self.blocks[id as usize];
                let equal = run
                    .iter()
                    .zip(self.key.iter())
                    .zip(block.iter())
                    .all(|((m, k), b)| m ^ k == *b);
                if equal {
                    found(i, id as usize);
                }
            }
        }
    }
}

struct Mapping {
    start: usize,
    end: usize,
    name: String,
}

/// Readable mappings of a process (`proc` is its `/proc` directory), except the
/// kernel's own pages.
fn readable_mappings(proc: &str) -> Result<Vec<Mapping>> {
    let maps = std::fs::read_to_string(format!("{proc}/maps")).map_err(|e| Error::Os {
        what: "read /proc/PID/maps",
        errno: e.raw_os_error().unwrap_or(0),
    })?;
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let name = fields.nth(3).unwrap_or("").to_owned();
        if !perms.starts_with('r')
            || matches!(name.as_str(), "[vvar]" | "[vvar_vclock]" | "[vsyscall]")
        {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        if let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
            out.push(Mapping { start, end, name });
        }
    }
    Ok(out)
}

/// Scans every readable mapping of this process for the masked needles.
///
/// `masked[i]` is secret `i` XOR-ed with `key` (64 bytes, repeating from the secret's
/// first byte). The scan's own read buffer is allocated in this process, so it may
/// land on (and zero) freed memory before that memory is read: use [`scan_process`]
/// from another process to see freed, unwiped copies.
pub fn scan_own_memory(masked: &[&[u8]], key: &[u8]) -> Result<Report> {
    scan_proc("/proc/self", masked, key)
}

/// Scans every readable mapping of process `pid` for the masked needles (see
/// [`scan_own_memory`]). Nothing is allocated in, or written to, that process. Reading
/// its memory needs ptrace access to it (`CAP_SYS_PTRACE` where it is not dumpable).
pub fn scan_process(pid: u32, masked: &[&[u8]], key: &[u8]) -> Result<Report> {
    if pid == 0 {
        return Err(Error::Invalid("pid 0 is not a process".into()));
    }
    scan_proc(&format!("/proc/{pid}"), masked, key)
}

fn scan_proc(proc: &str, masked: &[&[u8]], key: &[u8]) -> Result<Report> {
    let needles = Needles::new(masked, key)?;
    let mut report = Report {
        needles: vec![0; masked.len()],
        ..Report::default()
    };
    for &(secret, _) in &needles.origin {
        report.needles[secret] += 1;
    }
    let mem = File::open(format!("{proc}/mem")).map_err(|e| Error::Os {
        what: "open /proc/PID/mem",
        errno: e.raw_os_error().unwrap_or(0),
    })?;
    let mut buf = vec![0u8; CHUNK + BLOCK - 1];
    for map in readable_mappings(proc)? {
        report.regions += 1;
        let mut pos = map.start;
        while pos < map.end {
            let want = (map.end - pos).min(buf.len());
            let got = match mem.read_at(&mut buf[..want], pos as u64) {
                Ok(n) if n > 0 => n,
                _ => {
                    report.bytes_unreadable += (map.end - pos) as u64;
                    break;
                }
            };
            needles.search(&buf[..got], |offset, id| {
                let (secret, block) = needles.origin[id];
                report.hits.push(Hit {
                    secret,
                    block,
                    address: pos + offset,
                    mapping: map.name.clone(),
                });
            });
            buf[..got].zeroize();
            report.bytes_scanned += got as u64;
            if pos + got >= map.end || got < BLOCK {
                pos += got;
            } else {
                // Overlap so that a run across the chunk boundary is seen once.
                pos += got - (BLOCK - 1);
            }
        }
    }
    report.hits.sort_by_key(|h| h.address);
    report.hits.dedup_by_key(|h| (h.address, h.secret, h.block));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(seed: u64, n: usize) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 56) as u8
            })
            .collect()
    }

    fn mask(secret: &[u8], key: &[u8]) -> Vec<u8> {
        secret
            .iter()
            .zip(key.iter().cycle())
            .map(|(s, k)| s ^ k)
            .collect()
    }

    #[test]
    fn finds_a_live_copy_and_not_a_zeroized_one() {
        let key = pattern(1, BLOCK);
        let mut secret = pattern(2, 4096);
        let masked = mask(&secret, &key);
        let found = scan_own_memory(&[&masked], &key).unwrap();
        assert_eq!(found.needles, vec![64]);
        assert!(found
            .hits
            .iter()
            .any(|h| h.address == secret.as_ptr() as usize));
        assert!(found.bytes_scanned > 0);
        secret.zeroize();
        let after = scan_own_memory(&[&masked], &key).unwrap();
        assert!(
            after
                .hits
                .iter()
                .all(|h| h.address != secret.as_ptr() as usize),
            "{:?}",
            after.hits.first()
        );
    }

    #[test]
    fn flat_blocks_are_not_needles() {
        let key = pattern(3, BLOCK);
        let masked = mask(&[7u8; 256], &key);
        let r = scan_own_memory(&[&masked], &key).unwrap();
        assert_eq!(r.needles, vec![0]);
        assert!(r.hits.is_empty());
    }

    #[test]
    fn scans_this_process_by_its_pid() {
        let key = pattern(4, BLOCK);
        let secret = pattern(5, 1024);
        let masked = mask(&secret, &key);
        let found = scan_process(std::process::id(), &[&masked], &key).unwrap();
        assert!(found
            .hits
            .iter()
            .any(|h| h.address == secret.as_ptr() as usize));
    }

    #[test]
    fn a_missing_process_is_an_error() {
        let key = pattern(6, BLOCK);
        assert!(scan_process(0, &[], &key).is_err());
        assert!(scan_process(u32::MAX, &[], &key).is_err());
    }

    #[test]
    fn a_short_key_is_refused() {
        assert!(scan_own_memory(&[], &[1, 2, 3]).is_err());
    }
}
