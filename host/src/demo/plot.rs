//! Line charts as PNG files with no dependency and no fonts: a white canvas, a frame, four horizontal grid lines
//! and one coloured polyline per series. Axis ranges and the legend are written in the report's text.

/// One series: its values (x is the index, from 1) and its colour.
#[derive(Debug, Clone)]
pub struct Series {
    /// Name, for the report's legend.
    pub name: String,
    /// Values in step order; non-finite values are skipped.
    pub values: Vec<f64>,
    /// RGB colour.
    pub color: [u8; 3],
}

/// The y range the chart draws: the values' min and max (widened when flat).
pub fn y_range(series: &[Series]) -> (f64, f64) {
    let finite = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .filter(|v| v.is_finite());
    let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in finite {
        low = low.min(v);
        high = high.max(v);
    }
    if !low.is_finite() {
        return (0.0, 1.0);
    }
    if high - low < 1e-9 {
        return (low - 0.5, high + 0.5);
    }
    (low, high)
}

struct Canvas {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        Canvas {
            width,
            height,
            rgb: vec![255; width * height * 3],
        }
    }

    fn put(&mut self, x: i64, y: i64, color: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let at = (y as usize * self.width + x as usize) * 3;
            self.rgb[at..at + 3].copy_from_slice(&color);
        }
    }

    /// A line two pixels thick (Bresenham).
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), color: [u8; 3]) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.put(x, y, color);
            self.put(x + 1, y, color);
            self.put(x, y + 1, color);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }
}

/// Draws `series` on a `width` x `height` chart and returns the PNG bytes.
pub fn line_chart_png(series: &[Series], width: usize, height: usize) -> Vec<u8> {
    let mut canvas = Canvas::new(width, height);
    let margin = 12i64;
    let (left, top) = (margin, margin);
    let (right, bottom) = (width as i64 - margin, height as i64 - margin);
    let grey = [220, 220, 220];
    for k in 1..4 {
        let y = top + (bottom - top) * k / 4;
        canvas.line((left, y), (right, y), grey);
    }
    let black = [0, 0, 0];
    for (a, b) in [
        ((left, top), (right, top)),
        ((right, top), (right, bottom)),
        ((right, bottom), (left, bottom)),
        ((left, bottom), (left, top)),
    ] {
        canvas.line(a, b, black);
    }
    let (low, high) = y_range(series);
    let longest = series.iter().map(|s| s.values.len()).max().unwrap_or(0);
    let x_of = |i: usize| -> i64 {
        if longest <= 1 {
            (left + right) / 2
        } else {
            left + ((right - left) as f64 * i as f64 / (longest - 1) as f64).round() as i64
        }
    };
    let y_of = |v: f64| -> i64 {
        bottom - ((bottom - top) as f64 * (v - low) / (high - low)).round() as i64
    };
    for s in series {
        let mut previous: Option<(i64, i64)> = None;
        for (i, &v) in s.values.iter().enumerate() {
            if !v.is_finite() {
                previous = None;
                continue;
            }
            let point = (x_of(i), y_of(v));
            match previous {
                Some(p) => canvas.line(p, point, s.color),
                None => canvas.line(point, point, s.color),
            }
            previous = Some(point);
        }
    }
    encode_png(width, height, &canvas.rgb)
}

/// An 8-bit RGB PNG with stored (uncompressed) deflate blocks.
fn encode_png(width: usize, height: usize, rgb: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(height * (width * 3 + 1));
    for row in rgb.chunks(width * 3) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    zlib.extend_from_slice(&adler32(&raw).to_be_bytes());

    let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut header = Vec::with_capacity(13);
    header.extend_from_slice(&(width as u32).to_be_bytes());
    header.extend_from_slice(&(height as u32).to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit, truecolour, deflate, adaptive filter, no interlace
    for (kind, data) in [
        (b"IHDR", header.as_slice()),
        (b"IDAT", &zlib),
        (b"IEND", &[]),
    ] {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(data);
        png.extend_from_slice(&chunk);
        png.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    png
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_known_values() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }

    #[test]
    fn png_has_signature_size_and_draws_the_series() {
        let series = [Series {
            name: "a".into(),
            values: vec![0.0, 1.0, 0.5],
            color: [255, 0, 0],
        }];
        let png = line_chart_png(&series, 40, 30);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[16..24], &[0, 0, 0, 40, 0, 0, 0, 30]);
        assert!(png.ends_with(&crc32(b"IEND").to_be_bytes()));
        // A red pixel is somewhere in the stored image data.
        assert!(png.windows(3).any(|w| w == [255, 0, 0]));
        assert_eq!(y_range(&series), (0.0, 1.0));
    }
}
