//! The demo's charts as PNG files: line charts (one coloured polyline per series) and bar charts with interval
//! whiskers, each with a title, axes with ticks and numbers, axis labels and a legend, drawn with
//! embedded-graphics' built-in bitmap font (no system fonts) into a plain RGB canvas encoded here.

use embedded_graphics::Drawable;
use embedded_graphics::Pixel;
use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::mono_font::ascii::{FONT_6X10, FONT_7X13_BOLD};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::{DrawTarget, OriginDimensions, Point, RgbColor, Size};
use embedded_graphics::text::{Alignment, Baseline, Text, TextStyleBuilder};

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

impl OriginDimensions for Canvas {
    fn size(&self) -> Size {
        Size::new(self.width as u32, self.height as u32)
    }
}

impl DrawTarget for Canvas {
    type Color = Rgb888;
    type Error = std::convert::Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Self::Error> {
        for Pixel(point, color) in pixels {
            self.put(
                i64::from(point.x),
                i64::from(point.y),
                [color.r(), color.g(), color.b()],
            );
        }
        Ok(())
    }
}

impl Canvas {
    /// Writes `text` with its `alignment` point at `(x, y)` (the text's vertical middle there).
    fn text(&mut self, text: &str, (x, y): (i64, i64), alignment: Alignment, bold: bool) {
        let style = if bold {
            MonoTextStyle::new(&FONT_7X13_BOLD, Rgb888::BLACK)
        } else {
            MonoTextStyle::new(&FONT_6X10, Rgb888::BLACK)
        };
        let layout = TextStyleBuilder::new()
            .alignment(alignment)
            .baseline(Baseline::Middle)
            .build();
        let _ =
            Text::with_text_style(text, Point::new(x as i32, y as i32), style, layout).draw(self);
    }

    fn rect(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), color: [u8; 3]) {
        for y in y0.min(y1)..=y0.max(y1) {
            for x in x0.min(x1)..=x0.max(x1) {
                self.put(x, y, color);
            }
        }
    }
}

/// A number for a tick label: as few decimals as the tick spacing needs.
fn tick_label(value: f64, spacing: f64) -> String {
    let decimals = if spacing >= 1.0 {
        0
    } else {
        (-spacing.log10()).ceil().clamp(0.0, 6.0) as usize
    };
    format!("{value:.decimals$}")
}

/// About `count` round tick values covering `[low, high]`.
fn ticks(low: f64, high: f64, count: usize) -> (Vec<f64>, f64) {
    let raw = (high - low) / count.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let spacing = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (low / spacing).ceil() * spacing;
    let values = (0..)
        .map(|k| first + k as f64 * spacing)
        .take_while(|v| *v <= high + spacing * 1e-9)
        .collect();
    (values, spacing)
}

/// The frame, title, axis labels and y ticks of a chart; returns the plot area `(left, top, right, bottom)`.
fn axes(
    canvas: &mut Canvas,
    labels: &ChartLabels<'_>,
    (low, high): (f64, f64),
    legend_rows: usize,
) -> (i64, i64, i64, i64) {
    let (w, h) = (canvas.width as i64, canvas.height as i64);
    let (left, top, right) = (62, 40, w - 14);
    let bottom = h - 36 - 12 * legend_rows as i64;
    canvas.text(labels.title, (w / 2, 12), Alignment::Center, true);
    canvas.text(
        labels.x,
        ((left + right) / 2, bottom + 24),
        Alignment::Center,
        false,
    );
    // The y label, written above the axis (a bitmap font does not rotate).
    canvas.text(labels.y, (6, top - 14), Alignment::Left, false);
    let y_of = |v: f64| bottom - ((bottom - top) as f64 * (v - low) / (high - low)).round() as i64;
    let (values, spacing) = ticks(low, high, 5);
    for v in values {
        let y = y_of(v);
        canvas.line((left, y), (right, y), [225, 225, 225]);
        canvas.line((left - 4, y), (left, y), [0, 0, 0]);
        canvas.text(
            &tick_label(v, spacing),
            (left - 7, y),
            Alignment::Right,
            false,
        );
    }
    for (a, b) in [
        ((left, top), (right, top)),
        ((right, top), (right, bottom)),
        ((right, bottom), (left, bottom)),
        ((left, bottom), (left, top)),
    ] {
        canvas.line(a, b, [0, 0, 0]);
    }
    (left, top, right, bottom)
}

/// A chart's title and axis labels.
#[derive(Debug, Clone, Copy)]
pub struct ChartLabels<'a> {
    /// Title, above the chart.
    pub title: &'a str,
    /// The x axis's label.
    pub x: &'a str,
    /// The y axis's label.
    pub y: &'a str,
}

/// Legend entries below the plot area, one row each: a colour swatch and the name.
fn legend(canvas: &mut Canvas, entries: &[(&str, [u8; 3])], left: i64, first_row_y: i64) {
    for (k, (name, color)) in entries.iter().enumerate() {
        let y = first_row_y + 12 * k as i64;
        canvas.rect((left, y - 3), (left + 14, y + 2), *color);
        canvas.text(name, (left + 20, y), Alignment::Left, false);
    }
}

/// Draws `series` on a `width` x `height` line chart (x: step 1..n) and returns the PNG bytes.
pub fn line_chart_png(
    series: &[Series],
    labels: &ChartLabels<'_>,
    width: usize,
    height: usize,
) -> Vec<u8> {
    let mut canvas = Canvas::new(width, height);
    let (low, high) = y_range(series);
    let (left, top, right, bottom) = axes(&mut canvas, labels, (low, high), series.len());
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
    if longest > 1 {
        let (values, spacing) = ticks(1.0, longest as f64, 6);
        for v in values {
            let x = x_of(v as usize - 1);
            canvas.line((x, bottom), (x, bottom + 4), [0, 0, 0]);
            canvas.text(
                &tick_label(v, spacing.max(1.0)),
                (x, bottom + 11),
                Alignment::Center,
                false,
            );
        }
    }
    let entries: Vec<(&str, [u8; 3])> = series.iter().map(|s| (s.name.as_str(), s.color)).collect();
    legend(&mut canvas, &entries, left, bottom + 36);
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

/// One bar: a name, a value, its interval and a colour.
#[derive(Debug, Clone)]
pub struct Bar {
    /// Name, on the legend.
    pub name: String,
    /// Height.
    pub value: f64,
    /// The interval's ends (the whisker).
    pub interval: (f64, f64),
    /// RGB colour.
    pub color: [u8; 3],
}

/// Draws `bars` with their interval whiskers on a `width` x `height` chart (y from 0 to the largest whisker, at
/// least 1 when every value is a fraction) and returns the PNG bytes.
pub fn bar_chart_png(
    bars: &[Bar],
    labels: &ChartLabels<'_>,
    width: usize,
    height: usize,
) -> Vec<u8> {
    let mut canvas = Canvas::new(width, height);
    let top_value = bars
        .iter()
        .map(|b| b.interval.1.max(b.value))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let high = if top_value <= 1.0 {
        1.0
    } else {
        top_value * 1.05
    };
    let (left, top, right, bottom) = axes(&mut canvas, labels, (0.0, high), bars.len());
    let y_of =
        |v: f64| bottom - ((bottom - top) as f64 * (v / high).clamp(0.0, 1.0)).round() as i64;
    let slot = (right - left) / bars.len().max(1) as i64;
    for (k, bar) in bars.iter().enumerate() {
        let centre = left + slot * k as i64 + slot / 2;
        let half = (slot * 3 / 10).max(2);
        canvas.rect(
            (centre - half, y_of(bar.value)),
            (centre + half, bottom - 1),
            bar.color,
        );
        let (lo, hi) = (y_of(bar.interval.0), y_of(bar.interval.1));
        canvas.line((centre, lo), (centre, hi), [0, 0, 0]);
        canvas.line((centre - half / 2, lo), (centre + half / 2, lo), [0, 0, 0]);
        canvas.line((centre - half / 2, hi), (centre + half / 2, hi), [0, 0, 0]);
        canvas.text(
            &format!("{:.3}", bar.value),
            (centre, y_of(bar.interval.1) - 8),
            Alignment::Center,
            false,
        );
        canvas.text(
            &(k + 1).to_string(),
            (centre, bottom + 11),
            Alignment::Center,
            false,
        );
    }
    let entries: Vec<String> = bars
        .iter()
        .enumerate()
        .map(|(k, b)| format!("{}: {}", k + 1, b.name))
        .collect();
    let entries: Vec<(&str, [u8; 3])> = entries
        .iter()
        .zip(bars)
        .map(|(n, b)| (n.as_str(), b.color))
        .collect();
    legend(&mut canvas, &entries, left, bottom + 36);
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
        let labels = ChartLabels {
            title: "t",
            x: "step",
            y: "y",
        };
        let png = line_chart_png(&series, &labels, 200, 160);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[16..24], &[0, 0, 0, 200, 0, 0, 0, 160]);
        assert!(png.ends_with(&crc32(b"IEND").to_be_bytes()));
        // A red pixel is somewhere in the stored image data.
        assert!(png.windows(3).any(|w| w == [255, 0, 0]));
        assert_eq!(y_range(&series), (0.0, 1.0));
        let bars = [Bar {
            name: "b".into(),
            value: 0.4,
            interval: (0.3, 0.5),
            color: [0, 0, 255],
        }];
        let png = bar_chart_png(&bars, &labels, 200, 160);
        assert!(png.windows(3).any(|w| w == [0, 0, 255]));
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let (values, spacing) = ticks(0.0, 1.0, 5);
        assert_eq!(spacing, 0.2);
        assert_eq!(values.len(), 6);
        assert_eq!(tick_label(values[1], spacing), "0.2");
        let (values, spacing) = ticks(1.0, 64.0, 6);
        assert_eq!(spacing, 20.0);
        assert_eq!(values, vec![20.0, 40.0, 60.0]);
    }
}
