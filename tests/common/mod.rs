//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The fetched real data (`scripts/fetch-data.sh`), at `$REGSH_DATA` or `<repo>/data`.
pub fn data_dir() -> PathBuf {
    let dir = std::env::var_os("REGSH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("data"));
    assert!(
        dir.join("avg152").join("avg152T1.nii").is_file(),
        "real data missing under {}: run scripts/fetch-data.sh first (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// A path inside the fetched data.
pub fn data(rel: &str) -> PathBuf {
    data_dir().join(rel)
}

/// A NIfTI-1 header written byte by byte, independently of regsh's and the nifti crate's writers, so
/// tests can make any header (valid or not).
#[derive(Clone, Debug)]
pub struct RawHeader {
    pub sizeof_hdr: i32,
    pub dim: [i16; 8],
    pub datatype: i16,
    pub bitpix: i16,
    pub pixdim: [f32; 8],
    pub vox_offset: f32,
    pub scl_slope: f32,
    pub scl_inter: f32,
    pub qform_code: i16,
    pub sform_code: i16,
    pub quatern: [f32; 3],
    pub qoffset: [f32; 3],
    pub srow: [[f32; 4]; 3],
    pub magic: [u8; 4],
}

impl RawHeader {
    /// A valid single-file (`n+1`) header of the given x, y, z shape and datatype, identity sform.
    pub fn new(shape: [i16; 3], datatype: i16, bitpix: i16) -> Self {
        RawHeader {
            sizeof_hdr: 348,
            dim: [3, shape[0], shape[1], shape[2], 1, 1, 1, 1],
            datatype,
            bitpix,
            pixdim: [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            vox_offset: 352.0,
            scl_slope: 1.0,
            scl_inter: 0.0,
            qform_code: 0,
            sform_code: 1,
            quatern: [0.0; 3],
            qoffset: [0.0; 3],
            srow: [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]],
            magic: *b"n+1\0",
        }
    }

    /// The 348 header bytes (little endian).
    pub fn bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; 348];
        let mut put = |o: usize, v: &[u8]| b[o..o + v.len()].copy_from_slice(v);
        put(0, &self.sizeof_hdr.to_le_bytes());
        for (i, d) in self.dim.iter().enumerate() {
            put(40 + 2 * i, &d.to_le_bytes());
        }
        put(70, &self.datatype.to_le_bytes());
        put(72, &self.bitpix.to_le_bytes());
        for (i, p) in self.pixdim.iter().enumerate() {
            put(76 + 4 * i, &p.to_le_bytes());
        }
        put(108, &self.vox_offset.to_le_bytes());
        put(112, &self.scl_slope.to_le_bytes());
        put(116, &self.scl_inter.to_le_bytes());
        put(123, &[2u8]); // mm
        put(252, &self.qform_code.to_le_bytes());
        put(254, &self.sform_code.to_le_bytes());
        for i in 0..3 {
            put(256 + 4 * i, &self.quatern[i].to_le_bytes());
            put(268 + 4 * i, &self.qoffset[i].to_le_bytes());
        }
        for r in 0..3 {
            for c in 0..4 {
                put(280 + 16 * r + 4 * c, &self.srow[r][c].to_le_bytes());
            }
        }
        put(344, &self.magic);
        b
    }

    /// Writes a single `.nii` file: header, 4 zero extension bytes, then `data`.
    pub fn write_nii(&self, path: &Path, data: &[u8]) {
        let mut out = self.bytes();
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(data);
        std::fs::write(path, out).unwrap();
    }
}

/// Little-endian bytes of f32 values.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Pearson correlation of two equally long slices.
pub fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt()
}

/// A deterministic pseudo-random sequence in [0, 1) (xorshift), so tests need no RNG crate.
pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

/// The reference Python environment's interpreter (`scripts/setup-python.sh` makes it), at
/// `$REGSH_PYENV` or `<repo>/target/pyenv`.
pub fn python() -> PathBuf {
    let env = std::env::var_os("REGSH_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv"));
    let py = env.join("bin/python");
    assert!(
        py.is_file(),
        "no Python environment at {}: run scripts/setup-python.sh (scripts/test.sh does)",
        env.display()
    );
    py
}
