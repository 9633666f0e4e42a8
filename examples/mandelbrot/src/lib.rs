//! The Mandelbrot set rendered on the GPU, returned as a PNG image.
//!
//! Input (optional, UTF-8): `key=value` pairs separated by spaces or
//! newlines: `width` (800), `height` (600), `x` (-0.5), `y` (0), `zoom` (1),
//! `iterations` (256). Output: a PNG.

use agora_guest::prelude::*;

const SHADER: &str = include_str!("mandelbrot.wgsl");
/// Largest image: 64 megapixels.
const MAX_PIXELS: u64 = 64 << 20;

struct Mandelbrot;

struct View {
    width: u32,
    height: u32,
    x: f32,
    y: f32,
    zoom: f32,
    iterations: u32,
}

impl View {
    fn parse(text: &str) -> Result<View> {
        let mut v = View { width: 800, height: 600, x: -0.5, y: 0.0, zoom: 1.0, iterations: 256 };
        for pair in text.split_whitespace() {
            let (key, value) = pair.split_once('=').ok_or_else(|| Error::msg(format!("`{pair}` is not key=value")))?;
            let bad = || Error::msg(format!("bad value for {key}: `{value}`"));
            match key {
                "width" => v.width = value.parse().map_err(|_| bad())?,
                "height" => v.height = value.parse().map_err(|_| bad())?,
                "x" => v.x = value.parse().map_err(|_| bad())?,
                "y" => v.y = value.parse().map_err(|_| bad())?,
                "zoom" => v.zoom = value.parse().map_err(|_| bad())?,
                "iterations" => v.iterations = value.parse().map_err(|_| bad())?,
                other => return Err(Error::msg(format!("unknown key `{other}`"))),
            }
        }
        let pixels = v.width as u64 * v.height as u64;
        if pixels == 0 || pixels > MAX_PIXELS || !(v.zoom > 0.0) || v.iterations == 0 {
            return Err(Error::msg("need 0 < width*height <= 64 Mpx, zoom > 0 and iterations > 0"));
        }
        Ok(v)
    }
}

/// A smooth palette from deep blue through white to orange; black inside.
fn color(i: u32, max: u32) -> [u8; 3] {
    if i >= max {
        return [0, 0, 0];
    }
    let t = (i as f32 / max as f32).sqrt();
    let channel = |phase: f32| ((0.5 + 0.5 * (6.2831 * (t + phase)).cos()) * 255.0) as u8;
    [channel(0.55), channel(0.45), channel(0.3)]
}

impl Job for Mandelbrot {
    fn run(input: Input) -> Result<Output> {
        let text = String::from_utf8(input.bytes()?).map_err(|_| Error::msg("input is not UTF-8"))?;
        let v = View::parse(&text)?;
        let step = 3.0 / (v.height.min(v.width) as f32 * v.zoom);
        let mut params = Vec::new();
        for word in [v.width, v.height, v.iterations, 0] {
            params.extend_from_slice(&word.to_le_bytes());
        }
        for float in [v.x, v.y, step, 0.0] {
            params.extend_from_slice(&float.to_le_bytes());
        }
        let params = Buffer::from_bytes(&params, Usage::UNIFORM)?;
        let iterations = Buffer::zeroed(4 * v.width as u64 * v.height as u64, Usage::STORAGE)?;
        let shader = Shader::wgsl(SHADER)?;
        shader.dispatch("main", &[&params, &iterations], [v.width.div_ceil(16), v.height.div_ceil(16), 1])?;
        let counts = iterations.read::<u32>()?;
        report_progress(1, 2);
        let mut rgb = Vec::with_capacity(counts.len() * 3);
        for i in counts {
            rgb.extend_from_slice(&color(i, v.iterations));
        }
        let mut png_bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut png_bytes, v.width, v.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| Error::msg(e.to_string()))?;
        writer.write_image_data(&rgb).map_err(|e| Error::msg(e.to_string()))?;
        writer.finish().map_err(|e| Error::msg(e.to_string()))?;
        report_progress(2, 2);
        info!("{}x{} image, {} iterations, {} PNG bytes", v.width, v.height, v.iterations, png_bytes.len());
        Ok(png_bytes.into())
    }
}

agora_guest::export_job!(Mandelbrot);
