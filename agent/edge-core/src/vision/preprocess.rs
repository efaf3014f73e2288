//! Fitting a region of a frame into a model's input tensor: letterboxing for detectors (and
//! mapping boxes back), centre cropping for classification backbones.
//!
//! Letterbox: the region is scaled to fit the input while keeping its aspect ratio, centred,
//! and the border is filled with the value 0 after normalisation (the mean colour). Centre
//! crop: the centre square of `crop` times the shorter side is scaled to the input. Models were
//! calibrated with exactly these rules (scripts/models/calibration.py, efficientnet.py), and
//! the triangle filter of [`super::resize`].

use image::{RgbImage, imageops};
use tract_onnx::prelude::*;

use super::BBox;
use super::resize::resize_region;
use crate::model::{ColorOrder, InputSpec, Layout};

/// A rectangle of the source frame, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// Maps input-tensor coordinates back to source pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transform {
    scale: f32,
    pad_x: f32,
    pad_y: f32,
    origin_x: f32,
    origin_y: f32,
}

impl Transform {
    pub fn to_source(&self, b: BBox) -> BBox {
        let map = |v: f32, pad: f32, origin: f32| (v - pad) / self.scale + origin;
        [
            map(b[0], self.pad_x, self.origin_x),
            map(b[1], self.pad_y, self.origin_y),
            map(b[2], self.pad_x, self.origin_x),
            map(b[3], self.pad_y, self.origin_y),
        ]
    }
}

/// Builds the input tensor for `region` of `frame`.
pub fn letterbox(frame: &RgbImage, region: Region, spec: &InputSpec) -> (Tensor, Transform) {
    let (iw, ih) = (spec.width, spec.height);
    let scale = (iw as f32 / region.w as f32).min(ih as f32 / region.h as f32);
    let nw = ((region.w as f32 * scale).round() as u32).clamp(1, iw);
    let nh = ((region.h as f32 * scale).round() as u32).clamp(1, ih);
    let (x0, y0) = ((iw - nw) / 2, (ih - nh) / 2);
    let resized = if (nw, nh) == (region.w, region.h) {
        imageops::crop_imm(frame, region.x, region.y, region.w, region.h).to_image()
    } else {
        resize_region(frame, region, nw, nh)
    };
    let tensor = to_tensor(&resized, (x0, y0), spec);
    let transform =
        Transform { scale, pad_x: x0 as f32, pad_y: y0 as f32, origin_x: region.x as f32, origin_y: region.y as f32 };
    (tensor, transform)
}

/// Builds the input tensor from the centre square of `region`: `spec.crop` of its shorter
/// side, scaled (bilinear) to the input size.
pub fn center_crop(frame: &RgbImage, region: Region, spec: &InputSpec) -> Tensor {
    let side = ((region.w.min(region.h) as f32 * spec.crop.clamp(0.05, 1.0)).round() as u32).max(1);
    let (x, y) = (region.x + (region.w - side.min(region.w)) / 2, region.y + (region.h - side.min(region.h)) / 2);
    let square = Region { x, y, w: side.min(region.w), h: side.min(region.h) };
    let resized = resize_region(frame, square, spec.width, spec.height);
    to_tensor(&resized, (0, 0), spec)
}

/// Normalises `img` into a zeroed input tensor at offset `(x0, y0)`, in the model's colour
/// order and layout.
fn to_tensor(img: &RgbImage, (x0, y0): (u32, u32), spec: &InputSpec) -> Tensor {
    let order: [usize; 3] = match spec.color {
        ColorOrder::Rgb => [0, 1, 2],
        ColorOrder::Bgr => [2, 1, 0],
    };
    let (w, h) = (spec.width as usize, spec.height as usize);
    let mut data = vec![0f32; 3 * w * h];
    for (x, y, px) in img.enumerate_pixels() {
        let (ox, oy) = ((x + x0) as usize, (y + y0) as usize);
        if ox >= w || oy >= h {
            continue;
        }
        for (c, &channel) in order.iter().enumerate() {
            let v = (px.0[channel] as f32 - spec.mean[c]) / spec.std[c];
            let at = match spec.layout {
                Layout::Nchw => c * w * h + oy * w + ox,
                Layout::Nhwc => (oy * w + ox) * 3 + c,
            };
            data[at] = v;
        }
    }
    let shape = crate::model::input_shape_of(spec);
    Tensor::from_shape(&shape, &data).expect("shape matches data length")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ColorOrder, Layout};

    fn spec(layout: Layout, color: ColorOrder) -> InputSpec {
        InputSpec {
            name: "input".into(),
            layout,
            width: 8,
            height: 8,
            color,
            mean: [0.0; 3],
            std: [1.0; 3],
            resize: crate::model::Resize::Letterbox,
            crop: 0.875,
        }
    }

    #[test]
    fn wide_region_is_centred_vertically_and_maps_back() {
        let frame = RgbImage::from_pixel(16, 8, image::Rgb([10, 20, 30]));
        let region = Region { x: 0, y: 0, w: 16, h: 8 };
        let (t, tf) = letterbox(&frame, region, &spec(Layout::Nchw, ColorOrder::Bgr));
        let v = t.to_plain_array_view::<f32>().unwrap();
        assert_eq!(v.shape(), &[1, 3, 8, 8]);
        // rows 0,1 and 6,7 are padding, rows 2..6 carry the image (BGR order)
        assert_eq!(v[[0, 0, 0, 3]], 0.0);
        assert_eq!(v[[0, 0, 3, 3]], 30.0);
        assert_eq!(v[[0, 2, 3, 3]], 10.0);
        assert_eq!(v[[0, 0, 7, 3]], 0.0);
        let b = tf.to_source([0.0, 2.0, 8.0, 6.0]);
        assert_eq!(b, [0.0, 0.0, 16.0, 8.0]);
    }

    #[test]
    fn center_crop_keeps_the_middle_of_the_shorter_side() {
        // left half red, right half blue, a green bar in the middle third
        let frame = RgbImage::from_fn(30, 10, |x, _| match x {
            0..10 => image::Rgb([255, 0, 0]),
            10..20 => image::Rgb([0, 255, 0]),
            _ => image::Rgb([0, 0, 255]),
        });
        let mut s = spec(Layout::Nchw, ColorOrder::Rgb);
        s.crop = 1.0;
        let t = center_crop(&frame, Region { x: 0, y: 0, w: 30, h: 10 }, &s);
        let v = t.to_plain_array_view::<f32>().unwrap();
        // the 10x10 centre square is all green
        assert!((0..8).all(|x| v[[0, 1, x, 4]] == 255.0 && v[[0, 0, x, 4]] == 0.0));
    }

    #[test]
    fn region_offset_is_added_back_and_nhwc_is_interleaved() {
        let frame = RgbImage::from_pixel(40, 40, image::Rgb([1, 2, 3]));
        let region = Region { x: 20, y: 10, w: 8, h: 8 };
        let (t, tf) = letterbox(&frame, region, &spec(Layout::Nhwc, ColorOrder::Rgb));
        let v = t.to_plain_array_view::<f32>().unwrap();
        assert_eq!(v.shape(), &[1, 8, 8, 3]);
        assert_eq!((v[[0, 4, 4, 0]], v[[0, 4, 4, 2]]), (1.0, 3.0));
        assert_eq!(tf.to_source([1.0, 1.0, 2.0, 2.0]), [21.0, 11.0, 22.0, 12.0]);
    }
}
