//! The frames of the fuzzer: a well-formed call of a random NFS v3, MOUNT
//! v3 or PORTMAP v2 procedure with plausible arguments, then (mostly)
//! mutated and record-marked, sometimes wrongly.

use std::net::{IpAddr, SocketAddr};

use crate::nfs_client::{self, NfsConn};
use crate::rng::Rng;

/// Handles of the export the calls use (besides junk ones).
#[derive(Clone, Debug)]
pub struct Handles {
    /// The export's root directory.
    pub root: nfs_client::nfs_fh3,
    /// A regular file in it.
    pub file: nfs_client::nfs_fh3,
    /// The export path, for MOUNT calls.
    pub export: String,
}

/// Mounts `export` and creates the file the calls aim at.
pub(super) async fn prepare(from: IpAddr, to: SocketAddr, export: &str) -> anyhow::Result<Handles> {
    let root = nfs_client::mount(from, to, export).await?;
    let mut conn = NfsConn::connect(from, to).await?;
    let file = conn.create(&root, "fuzz-target").await?;
    Ok(Handles {
        root,
        file,
        export: export.to_string(),
    })
}

/// An XDR encoder of the few shapes calls need.
#[derive(Default)]
struct Xdr(Vec<u8>);

impl Xdr {
    fn u32(&mut self, value: u32) -> &mut Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    fn u64(&mut self, value: u64) -> &mut Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// Variable-length opaque (or string): length, bytes, padding.
    fn opaque(&mut self, bytes: &[u8]) -> &mut Self {
        self.u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(bytes);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }
}

const NFS: u32 = 100_003;
const MOUNT: u32 = 100_005;
const PORTMAP: u32 = 100_000;

/// One frame: a call, mostly mutated, record-marked.
pub(super) fn frame(rng: &mut Rng, handles: &Handles) -> Vec<u8> {
    let record = call(rng, handles);
    let record = mutate(rng, record, handles);
    mark(rng, record)
}

/// A well-formed call record (no record mark) of a random procedure.
fn call(rng: &mut Rng, handles: &Handles) -> Vec<u8> {
    let (program, version, procedure) = match rng.below(100) {
        0..=79 => (NFS, 3, rng.below(22) as u32),
        80..=91 => (MOUNT, 3, rng.below(6) as u32),
        92..=96 => (PORTMAP, 2, rng.below(6) as u32),
        _ => (
            or_random(rng, &[NFS, MOUNT, PORTMAP, 100_021]),
            or_random(rng, &[1, 2, 4]),
            rng.below(30) as u32,
        ),
    };
    let mut x = Xdr::default();
    x.u32(rng_u32(rng)).u32(0);
    x.u32(if rng.below(50) == 0 { 3 } else { 2 });
    x.u32(program).u32(version).u32(procedure);
    credentials(rng, &mut x);
    x.u32(0).u32(0); // AUTH_NONE verifier
    match program {
        NFS => nfs_args(rng, handles, procedure, &mut x),
        MOUNT => mount_args(rng, handles, procedure, &mut x),
        PORTMAP => portmap_args(rng, procedure, &mut x),
        _ => {
            let len = rng.below(64) as usize;
            let junk = rng.bytes(len);
            x.0.extend_from_slice(&junk);
        }
    }
    x.0
}

fn rng_u32(rng: &mut Rng) -> u32 {
    rng.next_u64() as u32
}

fn pick<T: Copy>(rng: &mut Rng, from: &[T]) -> T {
    from[rng.below(from.len() as u64) as usize]
}

/// `min` to `min + extra - 1` random bytes.
fn some_bytes(rng: &mut Rng, min: u64, extra: u64) -> Vec<u8> {
    let len = min + rng.below(extra);
    rng.bytes(len as usize)
}

/// One of `fixed`, or (as often as each of them) any 32-bit value.
fn or_random(rng: &mut Rng, fixed: &[u32]) -> u32 {
    let at = rng.below(fixed.len() as u64 + 1) as usize;
    fixed.get(at).copied().unwrap_or_else(|| rng_u32(rng))
}

/// One of `fixed`, or (as often as each of them) any 64-bit value.
fn or_random64(rng: &mut Rng, fixed: &[u64]) -> u64 {
    let at = rng.below(fixed.len() as u64 + 1) as usize;
    fixed.get(at).copied().unwrap_or_else(|| rng.next_u64())
}

/// AUTH_UNIX as root or a user (mostly), AUTH_NONE, or other flavors and
/// bodies, some over the 400 bytes RFC 5531 allows.
fn credentials(rng: &mut Rng, x: &mut Xdr) {
    match rng.below(100) {
        0..=69 => {
            let mut body = Xdr::default();
            body.u32(rng_u32(rng));
            let machine_len = if rng.below(20) == 0 {
                300
            } else {
                rng.below(20)
            };
            body.opaque(&vec![b'h'; machine_len as usize]);
            body.u32(or_random(rng, &[0, 0, 1000, 65534]));
            body.u32(or_random(rng, &[0, 0, 1000]));
            let gids = if rng.below(20) == 0 { 17 } else { rng.below(4) };
            body.u32(gids as u32);
            for _ in 0..gids {
                body.u32(pick(rng, &[0, 5, 1000]));
            }
            x.u32(1).opaque(&body.0);
        }
        70..=84 => {
            x.u32(0).u32(0);
        }
        85..=94 => {
            let len = pick(rng, &[0, 8, 64, 400, 401, 1000]);
            let body = rng.bytes(len);
            x.u32(or_random(rng, &[2, 3, 6, 390_003])).opaque(&body);
        }
        _ => {
            x.u32(1).u32(pick(rng, &[u32::MAX, 0x7fff_ffff, 401]));
        }
    }
}

/// A handle: the export's own, or junk of every length around 40 and 64.
fn handle(rng: &mut Rng, handles: &Handles) -> Vec<u8> {
    let real = if rng.below(2) == 0 {
        &handles.root
    } else {
        &handles.file
    };
    match rng.below(10) {
        0..=6 => real.data.to_vec(),
        7 => {
            let len = pick(rng, &[0, 24, 39, 40, 41, 64, 65, 200]);
            rng.bytes(len)
        }
        8 => {
            let mut bytes = real.data.to_vec();
            let at = rng.below(bytes.len() as u64) as usize;
            if let Some(b) = bytes.get_mut(at) {
                *b ^= 1 << rng.below(8);
            }
            bytes
        }
        _ => real.data.get(..24).unwrap_or_default().to_vec(),
    }
}

/// A file name: the ones the calls share, `.`, `..`, empty, with a `/`,
/// too long, or random bytes.
fn name(rng: &mut Rng) -> Vec<u8> {
    match rng.below(12) {
        0..=5 => pick(rng, &[&b"fz"[..], b"fz2", b"fz3", b"dz", b"fuzz-target"]).to_vec(),
        6 => b".".to_vec(),
        7 => b"..".to_vec(),
        8 => Vec::new(),
        9 => b"a/b".to_vec(),
        10 => vec![b'n'; 300],
        _ => {
            let len = 1 + rng.below(20) as usize;
            rng.bytes(len)
        }
    }
}

/// A file offset or size: small, large, or at the limits around 2^63.
fn offset(rng: &mut Rng) -> u64 {
    match rng.below(9) {
        0 => 0,
        1 | 2 => rng.below(1 << 20),
        3 => rng.below(1 << 40),
        4 => 1 << 62,
        5 => i64::MAX as u64,
        6 => 1 << 63,
        7 => u64::MAX,
        _ => u64::MAX - 4095,
    }
}

/// A byte count: the limits around 1 MiB and 4 GiB, or any below 1 MiB.
fn count(rng: &mut Rng) -> u32 {
    match rng.below(6) {
        0 => rng.below(1 << 20) as u32,
        n => [0, 1, 4096, (1 << 20) + 1, u32::MAX][n as usize - 1],
    }
}

/// `sattr3`: each attribute set or not; times as server or client time.
fn sattr(rng: &mut Rng, x: &mut Xdr) {
    let set = |rng: &mut Rng, x: &mut Xdr, value: &dyn Fn(&mut Rng, &mut Xdr)| {
        if rng.below(3) == 0 {
            x.u32(1);
            value(rng, x);
        } else {
            x.u32(0);
        }
    };
    set(rng, x, &|rng, x| {
        x.u32(or_random(rng, &[0o644, 0o777, 0o7777]));
    });
    set(rng, x, &|rng, x| {
        x.u32(or_random(rng, &[0, 1000]));
    });
    set(rng, x, &|rng, x| {
        x.u32(or_random(rng, &[0, 1000]));
    });
    set(rng, x, &|rng, x| {
        x.u64(offset(rng));
    });
    for _ in 0..2 {
        match rng.below(4) {
            0 => {
                x.u32(2).u32(rng_u32(rng)).u32(rng_u32(rng));
            }
            1 => {
                x.u32(1);
            }
            2 => {
                x.u32(rng.below(8) as u32);
            }
            _ => {
                x.u32(0);
            }
        }
    }
}

/// The arguments of NFS v3 procedure `procedure` (RFC 1813).
fn nfs_args(rng: &mut Rng, handles: &Handles, procedure: u32, x: &mut Xdr) {
    let fh = handle(rng, handles);
    match procedure {
        // GETATTR, READLINK, FSSTAT, FSINFO, PATHCONF
        1 | 5 | 18 | 19 | 20 => {
            x.opaque(&fh);
        }
        2 => {
            x.opaque(&fh);
            sattr(rng, x);
            if rng.below(2) == 0 {
                x.u32(1).u32(rng_u32(rng)).u32(0);
            } else {
                x.u32(0);
            }
        }
        // LOOKUP, REMOVE, RMDIR
        3 | 12 | 13 => {
            x.opaque(&fh).opaque(&name(rng));
        }
        4 => {
            x.opaque(&fh).u32(or_random(rng, &[0x3f, 1]));
        }
        6 => {
            x.opaque(&fh).u64(offset(rng)).u32(count(rng));
        }
        7 => {
            let len = pick(rng, &[0, 1, 512, 4096, 8192]);
            let data = rng.bytes(len);
            let said = if rng.below(8) == 0 {
                count(rng)
            } else {
                data.len() as u32
            };
            x.opaque(&fh).u64(offset(rng)).u32(said);
            x.u32(or_random(rng, &[0, 1, 2])).opaque(&data);
        }
        8 => {
            x.opaque(&fh).opaque(&name(rng));
            let how = or_random(rng, &[0, 1, 2]);
            x.u32(how);
            if how == 2 {
                x.u64(rng.next_u64());
            } else {
                sattr(rng, x);
            }
        }
        9 => {
            x.opaque(&fh).opaque(&name(rng));
            sattr(rng, x);
        }
        10 => {
            x.opaque(&fh).opaque(&name(rng));
            sattr(rng, x);
            let target = {
                let len = pick(rng, &[0, 8, 1024, 5000]);
                rng.bytes(len)
            };
            x.opaque(&target);
        }
        11 => {
            x.opaque(&fh).opaque(&name(rng));
            let kind = or_random(rng, &[3, 4, 6, 7, 1]);
            x.u32(kind);
            sattr(rng, x);
            if kind == 3 || kind == 4 {
                x.u32(rng_u32(rng)).u32(rng_u32(rng));
            }
        }
        14 => {
            x.opaque(&fh).opaque(&name(rng));
            let other = handle(rng, handles);
            x.opaque(&other).opaque(&name(rng));
        }
        15 => {
            let dir = handle(rng, handles);
            x.opaque(&fh).opaque(&dir).opaque(&name(rng));
        }
        16 => {
            x.opaque(&fh).u64(or_random64(rng, &[0, 1, 2, 3]));
            x.u64(rng.next_u64()).u32(count(rng));
        }
        17 => {
            x.opaque(&fh).u64(or_random64(rng, &[0, 1, 2, 3]));
            x.u64(rng.next_u64()).u32(count(rng)).u32(count(rng));
        }
        21 => {
            x.opaque(&fh).u64(offset(rng)).u32(count(rng));
        }
        _ => {}
    }
}

/// The arguments of MOUNT v3 procedure `procedure`.
fn mount_args(rng: &mut Rng, handles: &Handles, procedure: u32, x: &mut Xdr) {
    if procedure == 1 || procedure == 3 {
        let export = handles.export.as_bytes();
        let path = match rng.below(7) {
            0 | 1 => export.to_vec(),
            2 => [export, b"/fuzz-target"].concat(),
            3 => [export, b"/.."].concat(),
            4 => Vec::new(),
            5 => vec![b'/'; 1100],
            _ => some_bytes(rng, 0, 40),
        };
        x.opaque(&path);
    }
}

/// The arguments of PORTMAP v2 procedure `procedure`.
fn portmap_args(rng: &mut Rng, procedure: u32, x: &mut Xdr) {
    match procedure {
        1..=3 => {
            x.u32(or_random(rng, &[NFS, MOUNT]))
                .u32(or_random(rng, &[3, 1]))
                .u32(or_random(rng, &[6, 17]))
                .u32(rng_u32(rng));
        }
        5 => {
            x.u32(NFS).u32(3).u32(rng.below(22) as u32);
            let args = some_bytes(rng, 0, 64);
            x.opaque(&args);
        }
        _ => {}
    }
}

/// Boundary values a mutation writes over a word.
const INTERESTING: [u32; 8] = [
    0,
    1,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0xffff_fffe,
    0x0040_0000,
    0x0000_1000,
];

/// `record`, left whole (a quarter of the time) or mutated.
fn mutate(rng: &mut Rng, mut record: Vec<u8>, handles: &Handles) -> Vec<u8> {
    if record.is_empty() {
        return record;
    }
    let len = record.len() as u64;
    match rng.below(100) {
        0..=24 => {}
        25..=44 => {
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(len) as usize;
                record[at] ^= 1 << rng.below(8);
            }
        }
        45..=64 => {
            let words = (len / 4).max(1);
            let at = (rng.below(words) * 4) as usize;
            let value = pick(rng, &INTERESTING).to_be_bytes();
            for (i, b) in value.iter().enumerate() {
                if let Some(slot) = record.get_mut(at + i) {
                    *slot = *b;
                }
            }
        }
        65..=74 => record.truncate(rng.below(len) as usize),
        75..=81 => {
            let tail = some_bytes(rng, 1, 64);
            record.extend_from_slice(&tail);
        }
        82..=87 => {
            let at = rng.below(len) as usize;
            let bytes = some_bytes(rng, 1, 16);
            record.splice(at..at, bytes);
        }
        88..=93 => {
            let other = call(rng, handles);
            let cut = rng.below(len) as usize;
            let from = rng.below(other.len() as u64) as usize;
            record.truncate(cut);
            record.extend_from_slice(&other[from..]);
        }
        _ => {
            let at = rng.below(len) as usize;
            let end = (at + 1 + rng.below(16) as usize).min(record.len());
            record[at..end].fill(0xff);
        }
    }
    record
}

/// Record marking (RFC 5531 §11): one last fragment mostly; sometimes
/// split fragments, a length longer than what follows, a length far over
/// any record limit, or no last-fragment bit.
fn mark(rng: &mut Rng, record: Vec<u8>) -> Vec<u8> {
    let header = |len: usize, last: bool| -> [u8; 4] {
        let len = u32::try_from(len).unwrap_or(0x7fff_ffff) & 0x7fff_ffff;
        (len | if last { 0x8000_0000 } else { 0 }).to_be_bytes()
    };
    let mut out = Vec::with_capacity(record.len() + 16);
    match rng.below(100) {
        0..=85 => {
            out.extend_from_slice(&header(record.len(), true));
            out.extend_from_slice(&record);
        }
        86..=91 => {
            let pieces = 2 + rng.below(3) as usize;
            let mut rest = &record[..];
            for piece in 0..pieces {
                let last = piece + 1 == pieces;
                let take = if last {
                    rest.len()
                } else {
                    rng.below(rest.len() as u64 + 1) as usize
                };
                out.extend_from_slice(&header(take, last));
                out.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
            }
        }
        92..=94 => {
            let longer = record.len() + 1 + rng.below(1000) as usize;
            out.extend_from_slice(&header(longer, true));
            out.extend_from_slice(&record);
        }
        95..=96 => {
            let huge = (1 << 26) + rng.below(0x7fff_ffff - (1 << 26)) as usize;
            out.extend_from_slice(&header(huge, true));
            out.extend_from_slice(&record);
        }
        _ => {
            out.extend_from_slice(&header(record.len(), false));
            out.extend_from_slice(&record);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_calls_are_mostly_marked_whole() {
        let handles = Handles {
            root: nfs_client::nfs_fh3::default(),
            file: nfs_client::nfs_fh3::default(),
            export: "/geonfs".into(),
        };
        let mut rng = Rng::new(7);
        let frames: Vec<Vec<u8>> = (0..1000).map(|_| frame(&mut rng, &handles)).collect();
        let whole = frames
            .iter()
            .filter(|f| {
                let word = u32::from_be_bytes([f[0], f[1], f[2], f[3]]);
                word & 0x8000_0000 != 0 && (word & 0x7fff_ffff) as usize == f.len() - 4
            })
            .count();
        assert!((800..1000).contains(&whole), "{whole} of 1000 marked whole");
        let mut again = Rng::new(7);
        assert_eq!(frame(&mut again, &handles), frames[0], "a seed replays");
    }
}
