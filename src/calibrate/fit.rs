//! Weighted non-negative least squares and goodness-of-fit statistics.
//!
//! * [`nnls`]: Lawson–Hanson active-set NNLS (Lawson & Hanson, *Solving Least Squares Problems*,
//!   1974, ch. 23) on column-scaled data, each inner solve by SVD (nalgebra).
//! * [`fit_weighted`]: minimises `Σ w_i² (x_i·β − y_i)²` subject to `β ≥ 0`, and reports 95%
//!   confidence intervals from the weighted-OLS covariance of the free coefficients,
//!   `σ²(XᵀW²X)⁻¹` with `σ² = Σ w²r² / (n − p_free)` and Student's t quantile (statrs).
//! * [`r_squared`], [`rmse`], [`mape_pct`]: textbook definitions on unweighted residuals
//!   (`R² = 1 − SS_res/SS_tot`, `SS_tot = Σ(y − ȳ)²`).

use nalgebra::{DMatrix, DVector};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Result of a weighted NNLS fit.
#[derive(Clone, Debug, PartialEq)]
pub struct FitResult {
    /// Coefficients (≥ 0).
    pub beta: Vec<f64>,
    /// 95% CI half-widths (0 for coefficients at the bound).
    pub ci95_half_width: Vec<f64>,
    /// True for coefficients pinned at 0 by the constraint.
    pub at_bound: Vec<bool>,
}

fn lstsq(a: &DMatrix<f64>, b: &DVector<f64>) -> DVector<f64> {
    let svd = a.clone().svd(true, true);
    svd.solve(b, 1e-12).expect("SVD with U and V computed solves")
}

/// Non-negative least squares: `argmin ||A x − b||` subject to `x ≥ 0`.
///
/// # Panics
/// If `a` has no rows or `b` does not match.
pub fn nnls(a: &DMatrix<f64>, b: &DVector<f64>) -> DVector<f64> {
    assert!(a.nrows() > 0 && a.nrows() == b.len());
    let p = a.ncols();
    // Scale columns to unit norm (positive scaling keeps the constraint set).
    let scale: Vec<f64> = (0..p).map(|j| a.column(j).norm().max(1e-300)).collect();
    let mut s = a.clone();
    for (j, sc) in scale.iter().enumerate() {
        s.column_mut(j).scale_mut(1.0 / sc);
    }
    let mut x = DVector::zeros(p);
    let mut passive = vec![false; p];
    let tol = 1e-10 * b.norm().max(1.0);
    for _outer in 0..(10 * p + 10) {
        let w = s.transpose() * (b - &s * &x);
        let cand = (0..p).filter(|&j| !passive[j]).max_by(|&i, &j| w[i].total_cmp(&w[j]));
        match cand {
            Some(j) if w[j] > tol => passive[j] = true,
            _ => break,
        }
        for _inner in 0..(10 * p + 10) {
            let idx: Vec<usize> = (0..p).filter(|&j| passive[j]).collect();
            let sub = DMatrix::from_fn(s.nrows(), idx.len(), |r, c| s[(r, idx[c])]);
            let z_sub = lstsq(&sub, b);
            let mut z = DVector::zeros(p);
            for (k, &j) in idx.iter().enumerate() {
                z[j] = z_sub[k];
            }
            if idx.iter().all(|&j| z[j] > 0.0) {
                x = z;
                break;
            }
            let alpha = idx
                .iter()
                .filter(|&&j| z[j] <= 0.0)
                .map(|&j| x[j] / (x[j] - z[j]))
                .fold(f64::INFINITY, f64::min);
            x = &x + (z - &x) * alpha;
            for &j in &idx {
                if x[j] <= 1e-14 {
                    x[j] = 0.0;
                    passive[j] = false;
                }
            }
        }
    }
    DVector::from_iterator(p, (0..p).map(|j| x[j] / scale[j]))
}

/// Weighted NNLS of `y ≈ X β` with weights `w` (residual `i` is multiplied by `w_i`).
///
/// # Panics
/// If the dimensions disagree or there are no rows.
pub fn fit_weighted(x: &[Vec<f64>], y: &[f64], w: &[f64]) -> FitResult {
    let n = x.len();
    assert!(n > 0 && y.len() == n && w.len() == n);
    let p = x[0].len();
    let a = DMatrix::from_fn(n, p, |i, j| x[i][j] * w[i]);
    let b = DVector::from_iterator(n, (0..n).map(|i| y[i] * w[i]));
    let beta = nnls(&a, &b);
    let at_bound: Vec<bool> = (0..p).map(|j| beta[j] <= 0.0).collect();
    let free: Vec<usize> = (0..p).filter(|&j| !at_bound[j]).collect();
    let mut half = vec![0.0; p];
    let dof = n as i64 - free.len() as i64;
    if dof > 0 && !free.is_empty() {
        let r = &b - &a * &beta;
        let sigma2 = r.norm_squared() / dof as f64;
        let af = DMatrix::from_fn(n, free.len(), |i, c| a[(i, free[c])]);
        if let Some(inv) = (af.transpose() * &af).try_inverse() {
            let t = StudentsT::new(0.0, 1.0, dof as f64)
                .expect("dof > 0")
                .inverse_cdf(0.975);
            for (c, &j) in free.iter().enumerate() {
                half[j] = t * (sigma2 * inv[(c, c)]).max(0.0).sqrt();
            }
        }
    }
    FitResult {
        beta: beta.iter().copied().collect(),
        ci95_half_width: half,
        at_bound,
    }
}

/// Weighted NNLS with lower bounds: `β_j ≥ floors[j]` (a physical minimum, e.g. the KV-read
/// time per context token). Solved as NNLS on `y − X·floors`; `at_bound` then means "at its floor".
///
/// # Panics
/// As [`fit_weighted`], or if `floors` has another length than a row.
pub fn fit_weighted_floor(x: &[Vec<f64>], y: &[f64], w: &[f64], floors: &[f64]) -> FitResult {
    assert!(x.iter().all(|r| r.len() == floors.len()));
    let y2: Vec<f64> = x.iter().zip(y).map(|(r, v)| v - predict(r, floors)).collect();
    let mut f = fit_weighted(x, &y2, w);
    for (b, fl) in f.beta.iter_mut().zip(floors) {
        *b += fl;
    }
    f
}

/// Unconstrained weighted least squares with 95% confidence half-widths, or `None` when the
/// design is singular or has no residual degrees of freedom.
pub fn ols_weighted(x: &[Vec<f64>], y: &[f64], w: &[f64]) -> Option<(Vec<f64>, Vec<f64>)> {
    let n = x.len();
    let p = x.first()?.len();
    if n <= p {
        return None;
    }
    let a = DMatrix::from_fn(n, p, |i, j| x[i][j] * w[i]);
    let b = DVector::from_iterator(n, (0..n).map(|i| y[i] * w[i]));
    let inv = (a.transpose() * &a).try_inverse()?;
    let beta = &inv * a.transpose() * &b;
    let r = &b - &a * &beta;
    let dof = (n - p) as f64;
    let sigma2 = r.norm_squared() / dof;
    let t = StudentsT::new(0.0, 1.0, dof).ok()?.inverse_cdf(0.975);
    let half = (0..p).map(|j| t * (sigma2 * inv[(j, j)]).max(0.0).sqrt()).collect();
    Some((beta.iter().copied().collect(), half))
}

/// Prediction `x·β`.
pub fn predict(x: &[f64], beta: &[f64]) -> f64 {
    x.iter().zip(beta).map(|(a, b)| a * b).sum()
}

/// Coefficient of determination `1 − SS_res/SS_tot` (0 when `SS_tot` is 0 and the fit is exact).
pub fn r_squared(y: &[f64], pred: &[f64]) -> f64 {
    let mean = y.iter().sum::<f64>() / y.len() as f64;
    let ss_tot: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    let ss_res: f64 = y.iter().zip(pred).map(|(v, p)| (v - p).powi(2)).sum();
    if ss_tot == 0.0 {
        return if ss_res == 0.0 { 1.0 } else { 0.0 };
    }
    1.0 - ss_res / ss_tot
}

/// Root-mean-square error.
pub fn rmse(y: &[f64], pred: &[f64]) -> f64 {
    (y.iter().zip(pred).map(|(v, p)| (v - p).powi(2)).sum::<f64>() / y.len() as f64).sqrt()
}

/// Mean absolute percentage error \[%\].
pub fn mape_pct(y: &[f64], pred: &[f64]) -> f64 {
    100.0 * y.iter().zip(pred).map(|(v, p)| ((v - p) / v).abs()).sum::<f64>() / y.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nnls_matches_unconstrained_when_positive_and_clamps_otherwise() {
        // y = 2 + 3x exactly.
        let x: Vec<Vec<f64>> = (0..5).map(|i| vec![1.0, i as f64]).collect();
        let y: Vec<f64> = (0..5).map(|i| 2.0 + 3.0 * i as f64).collect();
        let f = fit_weighted(&x, &y, &[1.0; 5]);
        assert!((f.beta[0] - 2.0).abs() < 1e-9 && (f.beta[1] - 3.0).abs() < 1e-9);
        // y = 10 - x: the slope wants to be negative; NNLS pins it at 0 and the intercept is the mean.
        let y2: Vec<f64> = (0..5).map(|i| 10.0 - i as f64).collect();
        let f2 = fit_weighted(&x, &y2, &[1.0; 5]);
        assert_eq!(f2.beta[1], 0.0);
        assert!(f2.at_bound[1]);
        assert!((f2.beta[0] - 8.0).abs() < 1e-9);
    }

    #[test]
    fn floors_bound_coefficients_from_below() {
        // y = 2 + 3x with the slope floored at 4: the slope sits at 4 and the intercept absorbs
        // the rest as well as NNLS can (y − 4x = 2 − x has mean 0 on x = 0..4 → intercept 0).
        let x: Vec<Vec<f64>> = (0..5).map(|i| vec![1.0, i as f64]).collect();
        let y: Vec<f64> = (0..5).map(|i| 2.0 + 3.0 * i as f64).collect();
        let f = fit_weighted_floor(&x, &y, &[1.0; 5], &[0.0, 4.0]);
        assert!((f.beta[1] - 4.0).abs() < 1e-9 && f.at_bound[1]);
        assert!(f.beta[0].abs() < 1e-9);
        // A floor below the free optimum changes nothing.
        let g = fit_weighted_floor(&x, &y, &[1.0; 5], &[0.0, 1.0]);
        assert!((g.beta[1] - 3.0).abs() < 1e-9 && (g.beta[0] - 2.0).abs() < 1e-9);
    }

    #[test]
    fn r_squared_textbook_value() {
        // y = [1,2,3,4], pred = [1.5,1.5,3.5,3.5]: SS_res = 4*0.25 = 1, SS_tot = 5, R² = 0.8.
        assert!((r_squared(&[1.0, 2.0, 3.0, 4.0], &[1.5, 1.5, 3.5, 3.5]) - 0.8).abs() < 1e-12);
        assert!((rmse(&[1.0, 2.0, 3.0, 4.0], &[1.5, 1.5, 3.5, 3.5]) - 0.5).abs() < 1e-12);
        assert!((mape_pct(&[1.0, 2.0], &[1.1, 1.8]) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn confidence_interval_of_simple_regression() {
        // y = [1, 3, 2, 4] on x = [0,1,2,3]: Sxx = 5, Sxy = 4, slope 0.8, intercept 1.3, residuals
        // [-0.3, 0.9, -0.9, 0.3], SSE = 1.8, σ² = 0.9, se(slope) = sqrt(0.9/5) = 0.424264,
        // t(0.975, 2) = 4.302653 → half-width 1.825461.
        let x: Vec<Vec<f64>> = (0..4).map(|i| vec![1.0, i as f64]).collect();
        let f = fit_weighted(&x, &[1.0, 3.0, 2.0, 4.0], &[1.0; 4]);
        assert!((f.beta[1] - 0.8).abs() < 1e-9);
        assert!((f.beta[0] - 1.3).abs() < 1e-9);
        assert!(
            (f.ci95_half_width[1] - 1.825461).abs() < 1e-5,
            "{}",
            f.ci95_half_width[1]
        );
    }
}
