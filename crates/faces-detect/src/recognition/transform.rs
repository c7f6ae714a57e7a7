//! The point transforms dlib aligns faces with (`dlib/geometry/point_transforms.h`),
//! in the same precision: Umeyama's similarity transform between point sets, and
//! affine maps through three corners.

/// A point in f64, as dlib's `dpoint`.
pub(super) type Point = [f64; 2];

/// `x -> m x + b`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Affine {
    pub m: [[f64; 2]; 2],
    pub b: Point,
}

impl Affine {
    pub(super) fn apply(&self, p: Point) -> Point {
        [
            self.m[0][0] * p[0] + self.m[0][1] * p[1] + self.b[0],
            self.m[1][0] * p[0] + self.m[1][1] * p[1] + self.b[1],
        ]
    }

    /// The affine map taking `from[i]` to `to[i]` for three points not on a line
    /// (dlib fits it by least squares; with three points the fit is exact).
    pub(super) fn through(from: [Point; 3], to: [Point; 3]) -> Affine {
        // Solve [m | b] [from; 1] = to: invert the 3x3 matrix of the from points.
        let [p, q, r] = from;
        let det = p[0] * (q[1] - r[1]) - q[0] * (p[1] - r[1]) + r[0] * (p[1] - q[1]);
        // Columns of the inverse of [[px qx rx] [py qy ry] [1 1 1]].
        let inv = [
            [
                (q[1] - r[1]) / det,
                (r[0] - q[0]) / det,
                (q[0] * r[1] - r[0] * q[1]) / det,
            ],
            [
                (r[1] - p[1]) / det,
                (p[0] - r[0]) / det,
                (r[0] * p[1] - p[0] * r[1]) / det,
            ],
            [
                (p[1] - q[1]) / det,
                (q[0] - p[0]) / det,
                (p[0] * q[1] - q[0] * p[1]) / det,
            ],
        ];
        let row = |k: usize| -> [f64; 3] {
            std::array::from_fn(|j| (0..3).map(|i| to[i][k] * inv[i][j]).sum())
        };
        let (x, y) = (row(0), row(1));
        Affine {
            m: [[x[0], x[1]], [y[0], y[1]]],
            b: [x[2], y[2]],
        }
    }
}

/// The similarity transform (scale, rotation, translation; no reflection) that best
/// maps `from` onto `to` in least squares: Umeyama's method, which in two dimensions
/// has this closed form (the same rotation and scale as dlib's SVD route).
pub(super) fn similarity(from: &[Point], to: &[Point]) -> Affine {
    let n = from.len() as f64;
    let mean = |ps: &[Point]| {
        let s = ps
            .iter()
            .fold([0.0, 0.0], |a, p| [a[0] + p[0], a[1] + p[1]]);
        [s[0] / n, s[1] / n]
    };
    let (mf, mt) = (mean(from), mean(to));
    let (mut sigma, mut dot, mut cross) = (0.0, 0.0, 0.0);
    for (f, t) in from.iter().zip(to) {
        let (fx, fy) = (f[0] - mf[0], f[1] - mf[1]);
        let (tx, ty) = (t[0] - mt[0], t[1] - mt[1]);
        sigma += fx * fx + fy * fy;
        dot += tx * fx + ty * fy;
        cross += ty * fx - tx * fy;
    }
    // c R = [[a, -b], [b, a]] with a = dot / sigma, b = cross / sigma.
    let (a, b) = if sigma == 0.0 {
        (1.0, 0.0)
    } else {
        (dot / sigma, cross / sigma)
    };
    let m = [[a, -b], [b, a]];
    Affine {
        m,
        b: [
            mt[0] - (m[0][0] * mf[0] + m[0][1] * mf[1]),
            mt[1] - (m[1][0] * mf[0] + m[1][1] * mf[1]),
        ],
    }
}

/// `p` rotated by `angle` about `center` (`rotate_point`).
pub(super) fn rotate(center: Point, p: Point, angle: f64) -> Point {
    let (s, c) = angle.sin_cos();
    let (x, y) = (p[0] - center[0], p[1] - center[1]);
    [c * x - s * y + center[0], s * x + c * y + center[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_recovers_a_known_transform() {
        let (scale, angle, t) = (1.7f64, 0.3f64, [12.0, -4.0]);
        let from: Vec<Point> = vec![[0.0, 0.0], [3.0, 1.0], [1.0, 5.0], [-2.0, 2.0]];
        let to: Vec<Point> = from
            .iter()
            .map(|&p| {
                let r = rotate([0.0, 0.0], p, angle);
                [scale * r[0] + t[0], scale * r[1] + t[1]]
            })
            .collect();
        let fit = similarity(&from, &to);
        for (f, t) in from.iter().zip(&to) {
            let got = fit.apply(*f);
            assert!((got[0] - t[0]).abs() < 1e-9 && (got[1] - t[1]).abs() < 1e-9);
        }
    }

    #[test]
    fn affine_through_three_points_maps_them() {
        let from = [[0.0, 0.0], [149.0, 0.0], [0.0, 149.0]];
        let to = [[10.5, 3.25], [160.0, 20.0], [-5.0, 140.0]];
        let a = Affine::through(from, to);
        for (f, t) in from.iter().zip(&to) {
            let got = a.apply(*f);
            assert!((got[0] - t[0]).abs() < 1e-9 && (got[1] - t[1]).abs() < 1e-9);
        }
    }
}
