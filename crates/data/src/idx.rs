//! The IDX format of MNIST and Fashion-MNIST, read as published: raw or gzip-compressed.
//!
//! ```text
//! images  magic 0x00000803 (u8, 3 dims), then big-endian u32 N, R, C, then N·R·C pixels, row-major
//! labels  magic 0x00000801 (u8, 1 dim),  then big-endian u32 N, then N labels
//! tensor  [N, 1, R, C] f32 in [0, 1] (pixel / 255), channel-first like every stride tensor
//! ```
//!
//! Reference: LeCun, Cortes and Burges, "The MNIST database" (the file-format section), which
//! Fashion-MNIST reuses unchanged. Compression is recognised by the gzip magic bytes 1f 8b, not by
//! the file name, because users gunzip files and keep the name or rename them. Every size the header
//! promises is checked against what the file can hold before memory of that size is allocated, so
//! a corrupt header is an error rather than an allocation failure.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use stride_tensor::Tensor;

use crate::error::{Error, Result};

/// Magic number of an IDX file of u8 images: type 0x08 (u8), 3 dimensions.
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of u8 labels: type 0x08 (u8), 1 dimension.
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Classes of MNIST and Fashion-MNIST; a label must be below this.
pub const NUM_CLASSES: usize = 10;

/// The two magic bytes every gzip stream starts with (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// DEFLATE expands at most about 1032:1, so a gzip file of L bytes cannot decompress to more than
/// this many times L; a header promising more is a lie detectable before decompressing anything.
const MAX_GZIP_RATIO: u128 = 1032;

/// The images of an IDX file: `count` images of `rows` × `cols` u8 pixels, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    /// `count · rows · cols` pixels, image after image.
    pub pixels: Vec<u8>,
}

/// The labels of an IDX file, each below [`NUM_CLASSES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxLabels {
    pub labels: Vec<u8>,
}

impl IdxImages {
    /// The file's bytes, raw (uncompressed) IDX: what [`read_images`] reads back.
    pub fn encode(&self) -> Vec<u8> {
        let header = [IMAGES_MAGIC, self.count as u32, self.rows as u32, self.cols as u32];
        let mut bytes: Vec<u8> = header.iter().flat_map(|w| w.to_be_bytes()).collect();
        bytes.extend_from_slice(&self.pixels);
        bytes
    }

    /// The images as a `[N, 1, R, C]` tensor in [0, 1].
    pub fn to_tensor(&self) -> Result<Tensor> {
        let data = self.pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
        Ok(Tensor::new([self.count, 1, self.rows, self.cols], data)?)
    }
}

impl IdxLabels {
    /// The file's bytes, raw (uncompressed) IDX: what [`read_labels`] reads back.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes: Vec<u8> =
            [LABELS_MAGIC, self.labels.len() as u32].iter().flat_map(|w| w.to_be_bytes()).collect();
        bytes.extend_from_slice(&self.labels);
        bytes
    }

    /// The labels as class indices.
    pub fn to_indices(&self) -> Vec<usize> {
        self.labels.iter().map(|&l| usize::from(l)).collect()
    }
}

/// Reads an IDX file of u8 images (magic 0x00000803), raw or gzip.
pub fn read_images(path: impl AsRef<Path>) -> Result<IdxImages> {
    let path = path.as_ref();
    let mut body = Body::open(path)?;
    let [_, count, rows, cols] = body.header::<4>(IMAGES_MAGIC, "u8 images, 3 dims")?;
    let expected = u128::from(count) * u128::from(rows) * u128::from(cols);
    let formula = format!("N×R×C = {count}×{rows}×{cols}");
    let pixels = body.payload(expected, "pixels", formula)?;
    Ok(IdxImages { count: count as usize, rows: rows as usize, cols: cols as usize, pixels })
}

/// Reads an IDX file of u8 labels (magic 0x00000801), raw or gzip, each checked to be below
/// [`NUM_CLASSES`].
pub fn read_labels(path: impl AsRef<Path>) -> Result<IdxLabels> {
    let path = path.as_ref();
    let mut body = Body::open(path)?;
    let [_, count] = body.header::<2>(LABELS_MAGIC, "u8 labels, 1 dim")?;
    let labels = body.payload(u128::from(count), "labels", format!("N = {count}"))?;
    if let Some((index, &label)) = labels.iter().enumerate().find(|&(_, &l)| usize::from(l) >= NUM_CLASSES) {
        return Err(Error::IdxLabel { path: path.to_path_buf(), index, label, classes: NUM_CLASSES });
    }
    Ok(IdxLabels { labels })
}

/// Reads an images file and its labels file and checks that they pair one to one.
pub fn read_pair(images: impl AsRef<Path>, labels: impl AsRef<Path>) -> Result<(IdxImages, IdxLabels)> {
    let (images_path, labels_path) = (images.as_ref(), labels.as_ref());
    let images = read_images(images_path)?;
    let labels = read_labels(labels_path)?;
    if images.count != labels.labels.len() {
        return Err(Error::IdxCountMismatch {
            images: images_path.to_path_buf(),
            image_count: images.count,
            labels: labels_path.to_path_buf(),
            label_count: labels.labels.len(),
        });
    }
    Ok((images, labels))
}

/// An open IDX file positioned after whatever has been read, decompressing on the fly if gzip.
struct Body<'a> {
    path: &'a Path,
    reader: Box<dyn Read + 'a>,
    /// The most bytes the rest of the stream can hold: exact for a raw file, the DEFLATE bound
    /// for gzip.
    capacity: u128,
    gzip: bool,
}

impl<'a> Body<'a> {
    fn open(path: &'a Path) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| Error::read(path, e))?;
        let len = file.metadata().map_err(|e| Error::read(path, e))?.len();
        let mut start = [0u8; 2];
        let got = read_full(&mut file, &mut start).map_err(|e| Error::read(path, e))?;
        let prefix = io::Cursor::new(start[..got].to_vec());
        let gzip = got == 2 && start == GZIP_MAGIC;
        let (reader, capacity): (Box<dyn Read>, u128) = if gzip {
            (Box::new(MultiGzDecoder::new(prefix.chain(file))), u128::from(len) * MAX_GZIP_RATIO)
        } else {
            (Box::new(prefix.chain(file)), u128::from(len))
        };
        Ok(Body { path, reader, capacity, gzip })
    }

    /// The `N` big-endian u32 words of the header, the first being `magic`.
    fn header<const N: usize>(&mut self, magic: u32, what: &'static str) -> Result<[u32; N]> {
        let mut bytes = vec![0u8; 4 * N];
        let got = read_full(&mut self.reader, &mut bytes).map_err(|e| self.stream_error(e))?;
        let words: Vec<u32> =
            bytes[..got].chunks_exact(4).map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]])).collect();
        // A wrong magic is the more useful message even for a short file (a labels file given as
        // images is 8 bytes of header shorter), so check it as soon as four bytes are there.
        if let Some(&found) = words.first()
            && found != magic
        {
            return Err(Error::IdxMagic { path: self.path.to_path_buf(), expected: magic, what, found });
        }
        if got < bytes.len() {
            return Err(Error::IdxHeader {
                path: self.path.to_path_buf(),
                found: got as u64,
                needed: bytes.len() as u64,
                what,
            });
        }
        self.capacity = self.capacity.saturating_sub(bytes.len() as u128);
        let mut header = [0u32; N];
        header.copy_from_slice(&words);
        Ok(header)
    }

    /// Exactly `expected` bytes, the rest of the file; anything shorter or longer is an error.
    fn payload(&mut self, expected: u128, what: &'static str, formula: String) -> Result<Vec<u8>> {
        let size_error = |found: u64| Error::IdxSize {
            path: self.path.to_path_buf(),
            what,
            found,
            formula: formula.clone(),
            expected,
        };
        if expected > self.capacity {
            // Report the raw file's actual payload size; for gzip only decompressing would tell,
            // and the header's promise is impossible whatever it holds.
            let found = if self.gzip { self.count_rest()? } else { self.capacity as u64 };
            return Err(size_error(found));
        }
        // Now bounded by the file: a raw file holds at least `expected` bytes, and a gzip stream
        // is read through `take`, so memory grows only with bytes that really arrive.
        let expected_u64 = expected as u64;
        let mut data = Vec::with_capacity(if self.gzip { 0 } else { expected as usize });
        (&mut self.reader).take(expected_u64 + 1).read_to_end(&mut data).map_err(|e| self.stream_error(e))?;
        if data.len() as u64 != expected_u64 {
            let found = if data.len() as u64 > expected_u64 {
                expected_u64 + 1 + self.count_rest()?
            } else {
                data.len() as u64
            };
            return Err(size_error(found));
        }
        Ok(data)
    }

    /// Bytes left in the stream, counted without keeping them.
    fn count_rest(&mut self) -> Result<u64> {
        io::copy(&mut self.reader, &mut io::sink()).map_err(|e| self.stream_error(e))
    }

    /// A read error: the gzip decoder's are corrupt streams, the rest are I/O failures.
    fn stream_error(&self, e: io::Error) -> Error {
        if self.gzip {
            Error::Gzip { path: self.path.to_path_buf(), cause: e }
        } else {
            Error::read(self.path, e)
        }
    }
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
