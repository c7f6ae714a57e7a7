//! dlib's aligned face chip (`dlib/image_transforms/interpolation.h`,
//! `get_face_chip_details` and `extract_image_chips`): the 150x150 crop the ResNet
//! reads, rotated and scaled so the five landmarks sit where dlib's template puts
//! them. Large faces are first halved down dlib's image pyramid (`pyramid_down<2>`),
//! then sampled bilinearly, exactly as dlib does, so the chip's pixels are dlib's.

use image::RgbImage;

use super::transform::{rotate, similarity, Affine, Point};

/// The chip's side in pixels, and the margin around the landmarks' template (a
/// fraction of its size): what `compute_face_descriptor` asks for.
pub(super) const CHIP_SIZE: usize = 150;
const PADDING: f64 = 0.25;

/// Where dlib's 5-point template puts each landmark in the unit box.
const TEMPLATE: [Point; 5] = [
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
];

/// A rectangle in f64 whose right and bottom edges are inside (`drectangle`).
#[derive(Debug, Clone, Copy)]
struct DRect {
    l: f64,
    t: f64,
    r: f64,
    b: f64,
}

impl DRect {
    fn area(self) -> f64 {
        if self.t > self.b || self.l > self.r {
            0.0
        } else {
            (self.r - self.l + 1.0) * (self.b - self.t + 1.0)
        }
    }
    fn center(self) -> Point {
        [(self.l + self.r) / 2.0, (self.t + self.b) / 2.0]
    }
    /// One level down the pyramid (`pyramid_down<2>::rect_down`).
    fn down(self) -> DRect {
        let p = |x: f64, y: f64| [x / 2.0 - 1.25, y / 2.0 - 0.75];
        let (tl, br) = (p(self.l, self.t), p(self.r, self.b));
        DRect {
            l: tl[0],
            t: tl[1],
            r: br[0],
            b: br[1],
        }
    }
    fn corners(self) -> [Point; 4] {
        [
            [self.l, self.t],
            [self.r, self.t],
            [self.l, self.b],
            [self.r, self.b],
        ]
    }
}

/// The chip's place in the image: a rectangle and the angle it is turned by.
struct ChipDetails {
    rect: DRect,
    angle: f64,
}

/// `get_face_chip_details(landmarks, 150, 0.25)`.
fn chip_details(landmarks: &[[i64; 2]; 5]) -> ChipDetails {
    let size = CHIP_SIZE as f64;
    let from: Vec<Point> = TEMPLATE
        .iter()
        .map(|p| {
            let q = p.map(|v| (PADDING + v) / (2.0 * PADDING + 1.0));
            [q[0] * size, q[1] * size]
        })
        .collect();
    let to: Vec<Point> = landmarks
        .iter()
        .map(|p| [p[0] as f64, p[1] as f64])
        .collect();
    let tform = similarity(&from, &to);
    let q = [tform.m[0][0], tform.m[1][0]];
    let angle = q[1].atan2(q[0]);
    let scale = q[0].hypot(q[1]);
    let center = tform.apply([size / 2.0, size / 2.0]);
    // centered_drect: a width of w pixels spans w - 1.
    let (w, h) = (size * scale - 1.0, size * scale - 1.0);
    ChipDetails {
        rect: DRect {
            l: center[0] - w / 2.0,
            t: center[1] - h / 2.0,
            r: center[0] + w / 2.0,
            b: center[1] + h / 2.0,
        },
        angle,
    }
}

/// An RGB image as rows of pixels, for the crop and the pyramid's levels.
struct Pixels {
    width: usize,
    height: usize,
    data: Vec<u8>,
}

impl Pixels {
    fn at(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// One level of dlib's pyramid: a [1 4 6 4 1] filter each way, every second
    /// pixel kept, in integer arithmetic; `None` for images of 8 pixels or fewer.
    fn down(&self) -> Option<Pixels> {
        if self.height <= 8 || self.width <= 8 {
            return None;
        }
        let (w, h) = ((self.width - 3) / 2, (self.height - 3) / 2);
        // Rows filtered horizontally (every row, every second column).
        let mut rows = vec![0u16; self.height * w * 3];
        for y in 0..self.height {
            for c in 0..w {
                let px = |k: usize| self.at(2 * c + k, y);
                let (p1, p2, p3, p4, p5) = (px(0), px(1), px(2), px(3), px(4));
                for ch in 0..3 {
                    rows[(y * w + c) * 3 + ch] = u16::from(p1[ch])
                        + 4 * u16::from(p2[ch])
                        + 6 * u16::from(p3[ch])
                        + 4 * u16::from(p4[ch])
                        + u16::from(p5[ch]);
                }
            }
        }
        let mut data = vec![0u8; w * h * 3];
        let at = |y: usize, c: usize, ch: usize| u32::from(rows[(y * w + c) * 3 + ch]);
        for (dr, r) in (2..self.height.saturating_sub(2))
            .step_by(2)
            .enumerate()
            .take(h)
        {
            for c in 0..w {
                for ch in 0..3 {
                    let sum = at(r - 2, c, ch)
                        + 4 * at(r - 1, c, ch)
                        + 6 * at(r, c, ch)
                        + 4 * at(r + 1, c, ch)
                        + at(r + 2, c, ch);
                    data[(dr * w + c) * 3 + ch] = (sum / 256) as u8;
                }
            }
        }
        Some(Pixels {
            width: w,
            height: h,
            data,
        })
    }

    /// dlib's bilinear sample at `p` (`interpolate_bilinear`), in f64 and in its
    /// order of operations, truncated to bytes; `None` where a neighbour is outside.
    fn bilinear(&self, p: Point) -> Option<[u8; 3]> {
        let (left, top) = (p[0].floor(), p[1].floor());
        if left < 0.0
            || top < 0.0
            || left + 1.0 >= self.width as f64
            || top + 1.0 >= self.height as f64
        {
            return None;
        }
        let (lr, tb) = (p[0] - left, p[1] - top);
        let (x, y) = (left as usize, top as usize);
        let (tl, tr, bl, br) = (
            self.at(x, y),
            self.at(x + 1, y),
            self.at(x, y + 1),
            self.at(x + 1, y + 1),
        );
        Some(std::array::from_fn(|ch| {
            let f = |v: [u8; 3]| f64::from(v[ch]);
            let v = (1.0 - tb) * ((1.0 - lr) * f(tl) + lr * f(tr))
                + tb * ((1.0 - lr) * f(bl) + lr * f(br));
            v as u8
        }))
    }
}

/// The aligned 150x150 chip of the face with these landmarks, RGB row by row.
pub(super) fn extract(image: &RgbImage, landmarks: &[[i64; 2]; 5]) -> Vec<u8> {
    let details = chip_details(landmarks);
    let chip_area = (CHIP_SIZE * CHIP_SIZE) as f64;

    // How many pyramid levels, and the image area they need (the turned rectangle
    // grown by a margin that doubles, plus 2, per level).
    let mut depth = 0;
    let mut grow = 2.0;
    let mut r = details.rect.down();
    while r.area() > chip_area {
        r = r.down();
        depth += 1;
        grow = grow * 2.0 + 2.0;
    }
    let center = details.rect.center();
    let turned = details
        .rect
        .corners()
        .map(|c| rotate(center, c, details.angle));
    let (iw, ih) = (f64::from(image.width()), f64::from(image.height()));
    let grown = DRect {
        l: turned.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min) - grow,
        t: turned.iter().map(|p| p[1]).fold(f64::INFINITY, f64::min) - grow,
        r: turned
            .iter()
            .map(|p| p[0])
            .fold(f64::NEG_INFINITY, f64::max)
            + grow,
        b: turned
            .iter()
            .map(|p| p[1])
            .fold(f64::NEG_INFINITY, f64::max)
            + grow,
    };
    // Intersected with the image, then rounded to whole pixels (`std::lround`).
    let round = |v: f64| v.round() as i64;
    let (bl, bt) = (round(grown.l.max(0.0)), round(grown.t.max(0.0)));
    let (br, bb) = (round(grown.r.min(iw - 1.0)), round(grown.b.min(ih - 1.0)));
    let crop = if bl > br || bt > bb {
        Pixels {
            width: 0,
            height: 0,
            data: Vec::new(),
        }
    } else {
        let (w, h) = ((br - bl + 1) as usize, (bb - bt + 1) as usize);
        let mut data = Vec::with_capacity(w * h * 3);
        for y in bt..=bb {
            for x in bl..=br {
                data.extend_from_slice(&image.get_pixel(x as u32, y as u32).0);
            }
        }
        Pixels {
            width: w,
            height: h,
            data,
        }
    };
    let (origin_x, origin_y) = if bl > br || bt > bb {
        (0.0, 0.0)
    } else {
        (bl as f64, bt as f64)
    };

    // The rectangle in the crop's coordinates, taken down to the level it is sampled from.
    let mut rect = DRect {
        l: details.rect.l - origin_x,
        t: details.rect.t - origin_y,
        r: details.rect.r - origin_x,
        b: details.rect.b - origin_y,
    };
    let mut source = crop;
    let mut level = 0;
    while rect.down().area() > chip_area && level < depth {
        rect = rect.down();
        source = match source.down() {
            Some(s) => s,
            None => Pixels {
                width: 0,
                height: 0,
                data: Vec::new(),
            },
        };
        level += 1;
    }

    // Chip corners to the turned rectangle's corners.
    let last = (CHIP_SIZE - 1) as f64;
    let c = rect.center();
    let to = [
        rotate(c, [rect.l, rect.t], details.angle),
        rotate(c, [rect.r, rect.t], details.angle),
        rotate(c, [rect.l, rect.b], details.angle),
    ];
    let map = Affine::through([[0.0, 0.0], [last, 0.0], [0.0, last]], to);
    let mut chip = vec![0u8; CHIP_SIZE * CHIP_SIZE * 3];
    for y in 0..CHIP_SIZE {
        for x in 0..CHIP_SIZE {
            if let Some(p) = source.bilinear(map.apply([x as f64, y as f64])) {
                chip[(y * CHIP_SIZE + x) * 3..][..3].copy_from_slice(&p);
            }
        }
    }
    chip
}
