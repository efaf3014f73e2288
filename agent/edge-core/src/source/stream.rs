//! Frames in a byte stream written by another program: raw video of a declared size and pixel
//! format, or MJPEG (JPEGs back to back, found by walking their markers, so that a thumbnail
//! inside a JPEG's EXIF data does not end it early). Nothing in the stream is trusted: a frame
//! is at most [`MAX_FRAME_BYTES`], bytes before a JPEG's start are skipped and counted, and a
//! frame cut short is an error for the stream, never a panic.

use std::io::{BufRead, BufReader, Read};

use image::RgbImage;
use serde::{Deserialize, Serialize};

/// The largest frame a stream may carry (a 4K RGB frame is 24.9 MB).
pub const MAX_FRAME_BYTES: usize = 32 << 20;
/// The largest side of a frame.
pub const MAX_SIDE: u32 = 8192;

/// How the pixels of a raw frame are laid out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PixelFormat {
    /// 3 bytes per pixel, red first (`ffmpeg -pix_fmt rgb24`, GStreamer `format=RGB`).
    #[default]
    Rgb24,
    /// 3 bytes per pixel, blue first (`bgr24`, `format=BGR`).
    Bgr24,
    /// 1 byte per pixel (`gray`, `format=GRAY8`).
    Gray,
}

impl PixelFormat {
    fn bytes(self) -> usize {
        match self {
            PixelFormat::Rgb24 | PixelFormat::Bgr24 => 3,
            PixelFormat::Gray => 1,
        }
    }
}

/// What a program writes to its standard output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StreamFormat {
    /// Frames of exactly `width * height * bytes per pixel`, back to back.
    Rawvideo {
        width: u32,
        height: u32,
        #[serde(default)]
        pix_fmt: PixelFormat,
    },
    /// JPEG images back to back (`-f mjpeg`, `rpicam-vid --codec mjpeg`, `multipartmux`-free).
    Mjpeg,
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("reading the stream: {0}")]
    Io(#[from] std::io::Error),
    #[error("the stream ended inside a frame ({got} of {expected} bytes)")]
    Truncated { got: usize, expected: usize },
    #[error("the stream ended inside a JPEG ({0} bytes)")]
    TruncatedJpeg(usize),
    #[error("a frame of more than {MAX_FRAME_BYTES} bytes")]
    TooBig,
    #[error("no JPEG start in {0} bytes: is the format right?")]
    NoJpeg(usize),
    #[error("a JPEG segment with length {0}")]
    BadSegment(u16),
    #[error("decoding a frame: {0}")]
    Decode(String),
}

impl StreamFormat {
    /// Whether the settings describe frames the agent can take; the message says why not.
    pub fn check(&self) -> Result<(), String> {
        match *self {
            StreamFormat::Rawvideo { width, height, pix_fmt } => {
                if !(1..=MAX_SIDE).contains(&width) || !(1..=MAX_SIDE).contains(&height) {
                    return Err(format!("width and height must be 1 to {MAX_SIDE}, got {width}x{height}"));
                }
                if width as usize * height as usize * pix_fmt.bytes() > MAX_FRAME_BYTES {
                    return Err(format!("a {width}x{height} frame is larger than {MAX_FRAME_BYTES} bytes"));
                }
                Ok(())
            }
            StreamFormat::Mjpeg => Ok(()),
        }
    }

    fn frame_bytes(&self) -> Option<usize> {
        match *self {
            StreamFormat::Rawvideo { width, height, pix_fmt } => {
                Some(width as usize * height as usize * pix_fmt.bytes())
            }
            StreamFormat::Mjpeg => None,
        }
    }

    /// One frame's bytes as RGB.
    pub fn decode(&self, bytes: Vec<u8>) -> Result<RgbImage, StreamError> {
        match *self {
            StreamFormat::Rawvideo { width, height, pix_fmt } => {
                let rgb = match pix_fmt {
                    PixelFormat::Rgb24 => bytes,
                    PixelFormat::Bgr24 => bytes.chunks_exact(3).flat_map(|p| [p[2], p[1], p[0]]).collect(),
                    PixelFormat::Gray => bytes.iter().flat_map(|&g| [g, g, g]).collect(),
                };
                RgbImage::from_raw(width, height, rgb).ok_or_else(|| StreamError::Decode("frame size".into()))
            }
            StreamFormat::Mjpeg => {
                let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), image::ImageFormat::Jpeg);
                let mut limits = image::Limits::default();
                limits.max_image_width = Some(MAX_SIDE);
                limits.max_image_height = Some(MAX_SIDE);
                limits.max_alloc = Some(MAX_FRAME_BYTES as u64 * 2);
                reader.limits(limits);
                let img = reader.decode().map_err(|e| StreamError::Decode(e.to_string()))?;
                Ok(img.into_rgb8())
            }
        }
    }
}

/// Cuts a byte stream into frames.
pub struct Splitter<R: Read> {
    reader: BufReader<R>,
    format: StreamFormat,
    /// Bytes skipped looking for a JPEG's start.
    pub skipped: u64,
}

impl<R: Read> Splitter<R> {
    pub fn new(reader: R, format: StreamFormat) -> Splitter<R> {
        Splitter { reader: BufReader::with_capacity(256 << 10, reader), format, skipped: 0 }
    }

    /// The next frame's bytes; `None` when the stream ends between frames.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, StreamError> {
        match self.format.frame_bytes() {
            Some(n) => self.raw(n),
            None => self.jpeg(),
        }
    }

    fn raw(&mut self, expected: usize) -> Result<Option<Vec<u8>>, StreamError> {
        let mut frame = vec![0u8; expected];
        let mut got = 0;
        while got < expected {
            match self.reader.read(&mut frame[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(StreamError::Truncated { got, expected }),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Some(frame))
    }

    fn byte(&mut self) -> Result<Option<u8>, StreamError> {
        let buf = self.reader.fill_buf()?;
        let Some(&b) = buf.first() else { return Ok(None) };
        self.reader.consume(1);
        Ok(Some(b))
    }

    /// Skips to a JPEG's start (FF D8); false at the end of the stream.
    fn find_start(&mut self) -> Result<bool, StreamError> {
        let mut last = 0u8;
        let mut skipped = 0usize;
        loop {
            let Some(b) = self.byte()? else {
                self.skipped += skipped as u64;
                return Ok(false);
            };
            if last == 0xFF && b == 0xD8 {
                // the FF before D8 was counted as skipped
                self.skipped += skipped.saturating_sub(1) as u64;
                return Ok(true);
            }
            skipped += 1;
            if skipped > MAX_FRAME_BYTES {
                return Err(StreamError::NoJpeg(skipped));
            }
            last = b;
        }
    }

    fn jpeg(&mut self) -> Result<Option<Vec<u8>>, StreamError> {
        if !self.find_start()? {
            return Ok(None);
        }
        let mut out = vec![0xFF, 0xD8];
        let cut = |out: &Vec<u8>| StreamError::TruncatedJpeg(out.len());
        // the marker found at the end of entropy-coded data, not yet handled
        let mut pending: Option<u8> = None;
        loop {
            if out.len() > MAX_FRAME_BYTES {
                return Err(StreamError::TooBig);
            }
            let marker = match pending.take() {
                Some(m) => m,
                None => {
                    // a marker: FF, any fill FFs, then its code
                    if self.byte()?.ok_or_else(|| cut(&out))? != 0xFF {
                        return Err(StreamError::Decode("a JPEG segment does not start with FF".into()));
                    }
                    let mut m = 0xFF;
                    while m == 0xFF {
                        m = self.byte()?.ok_or_else(|| cut(&out))?;
                    }
                    m
                }
            };
            out.extend_from_slice(&[0xFF, marker]);
            match marker {
                0xD9 => return Ok(Some(out)),
                0x01 | 0xD0..=0xD7 => {}
                _ => {
                    let hi = self.byte()?.ok_or_else(|| cut(&out))?;
                    let lo = self.byte()?.ok_or_else(|| cut(&out))?;
                    let len = u16::from_be_bytes([hi, lo]);
                    if len < 2 {
                        return Err(StreamError::BadSegment(len));
                    }
                    out.extend_from_slice(&[hi, lo]);
                    let start = out.len();
                    out.resize(start + len as usize - 2, 0);
                    self.reader.read_exact(&mut out[start..]).map_err(|_| StreamError::TruncatedJpeg(start))?;
                    if marker == 0xDA {
                        pending = Some(self.entropy(&mut out)?);
                    }
                }
            }
        }
    }

    /// Copies a scan's entropy-coded data (where FF is followed by 00 or a restart marker)
    /// into `out`; returns the code of the marker that ends it.
    fn entropy(&mut self, out: &mut Vec<u8>) -> Result<u8, StreamError> {
        loop {
            if out.len() > MAX_FRAME_BYTES {
                return Err(StreamError::TooBig);
            }
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Err(StreamError::TruncatedJpeg(out.len()));
            }
            // copy up to the next FF in one go
            let n = buf.iter().position(|&b| b == 0xFF).unwrap_or(buf.len());
            out.extend_from_slice(&buf[..n]);
            self.reader.consume(n);
            if n > 0 {
                continue;
            }
            self.reader.consume(1);
            let mut code = self.byte()?.ok_or(StreamError::TruncatedJpeg(out.len()))?;
            while code == 0xFF {
                code = self.byte()?.ok_or(StreamError::TruncatedJpeg(out.len()))?;
            }
            match code {
                0x00 | 0xD0..=0xD7 => out.extend_from_slice(&[0xFF, code]),
                m => return Ok(m),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg_of(width: u32, height: u32, seed: u8) -> Vec<u8> {
        let img = RgbImage::from_fn(width, height, |x, y| image::Rgb([(x as u8).wrapping_mul(seed), y as u8, seed]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&img).unwrap();
        out
    }

    #[test]
    fn mjpeg_is_cut_into_each_jpeg_with_garbage_between_skipped() {
        let (a, b) = (jpeg_of(64, 48, 3), jpeg_of(32, 16, 7));
        let mut stream = b"junk\xFF\x00".to_vec();
        stream.extend_from_slice(&a);
        stream.extend_from_slice(b"\r\n--boundary\r\n");
        stream.extend_from_slice(&b);
        let mut s = Splitter::new(&stream[..], StreamFormat::Mjpeg);
        assert_eq!(s.next_frame().unwrap().unwrap(), a);
        assert_eq!(s.next_frame().unwrap().unwrap(), b);
        assert!(s.next_frame().unwrap().is_none());
        assert_eq!(s.skipped, 6 + 14);
        let img = StreamFormat::Mjpeg.decode(b).unwrap();
        assert_eq!((img.width(), img.height()), (32, 16));
    }

    #[test]
    fn a_thumbnail_inside_a_jpeg_does_not_end_it() {
        let (outer, thumb) = (jpeg_of(40, 30, 5), jpeg_of(8, 8, 9));
        // an APP1 segment holding a whole JPEG (SOI..EOI), as EXIF thumbnails do
        let mut with_thumb = outer[..2].to_vec();
        let len = (thumb.len() + 2) as u16;
        with_thumb.extend_from_slice(&[0xFF, 0xE1]);
        with_thumb.extend_from_slice(&len.to_be_bytes());
        with_thumb.extend_from_slice(&thumb);
        with_thumb.extend_from_slice(&outer[2..]);
        let mut s = Splitter::new(&with_thumb[..], StreamFormat::Mjpeg);
        let frame = s.next_frame().unwrap().unwrap();
        assert_eq!(frame, with_thumb);
        assert_eq!(StreamFormat::Mjpeg.decode(frame).unwrap().width(), 40);
    }

    #[test]
    fn a_truncated_jpeg_or_raw_frame_is_an_error() {
        let a = jpeg_of(64, 48, 3);
        for cut in [3, 30, a.len() - 1] {
            let mut s = Splitter::new(&a[..cut], StreamFormat::Mjpeg);
            assert!(s.next_frame().is_err(), "cut at {cut}");
        }
        let format = StreamFormat::Rawvideo { width: 4, height: 2, pix_fmt: PixelFormat::Bgr24 };
        let mut s = Splitter::new(&[7u8; 24 + 10][..], format.clone());
        let frame = s.next_frame().unwrap().unwrap();
        assert!(matches!(s.next_frame(), Err(StreamError::Truncated { got: 10, expected: 24 })));
        assert_eq!(format.decode(frame).unwrap().dimensions(), (4, 2));
        assert!(Splitter::new(&[][..], format).next_frame().unwrap().is_none());
    }

    #[test]
    fn garbage_without_a_jpeg_is_an_error_not_a_hang() {
        let garbage = vec![0xFFu8; MAX_FRAME_BYTES + 10];
        assert!(matches!(Splitter::new(&garbage[..], StreamFormat::Mjpeg).next_frame(), Err(StreamError::NoJpeg(_))));
        // a JPEG start followed by nonsense
        let mut s = Splitter::new(&[0xFF, 0xD8, 0x12, 0x34][..], StreamFormat::Mjpeg);
        assert!(s.next_frame().is_err());
        let mut s = Splitter::new(&[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x01][..], StreamFormat::Mjpeg);
        assert!(matches!(s.next_frame(), Err(StreamError::BadSegment(1))));
    }

    #[test]
    fn formats_are_checked() {
        assert!(StreamFormat::Rawvideo { width: 0, height: 10, pix_fmt: PixelFormat::Rgb24 }.check().is_err());
        assert!(StreamFormat::Rawvideo { width: 8192, height: 8192, pix_fmt: PixelFormat::Rgb24 }.check().is_err());
        assert!(StreamFormat::Rawvideo { width: 1920, height: 1080, pix_fmt: PixelFormat::Rgb24 }.check().is_ok());
        let bgr = StreamFormat::Rawvideo { width: 1, height: 1, pix_fmt: PixelFormat::Bgr24 };
        assert_eq!(bgr.decode(vec![1, 2, 3]).unwrap().into_raw(), [3, 2, 1]);
    }
}
