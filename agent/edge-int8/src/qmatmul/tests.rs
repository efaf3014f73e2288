//! The integer matmul's tests: row quantization, packed and row products against direct sums.

use super::*;

#[test]
fn rows_quantize_to_their_own_range_and_round_half_to_even() {
    let mut q = [0i8; 5];
    // scale 1: 2.5 → 2, −2.5 → −2, 3.5 → 4
    assert_eq!(quantize_row(&[127.0, -127.0, 2.5, -2.5, 3.5], &mut q), 1.0);
    assert_eq!(q, [127, -127, 2, -2, 4]);
    assert_eq!(quantize_row(&[0.0; 5], &mut q), 1.0);
    assert_eq!(q, [0; 5]);
    assert!(quantize_row(&[1.0, f32::NAN, f32::INFINITY, 0.0, 0.0], &mut q).is_nan());
}

#[test]
fn empty_weights_are_an_error_not_a_division_by_zero() -> TractResult<()> {
    // a pushed model can name EdgeQMatMul itself, with any shapes
    for (k, n) in [(0usize, 4usize), (4, 0)] {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([2, k]))?;
        let w = model.add_const("w", Tensor::zero::<i8>(&[n, k])?)?;
        let scale = model.add_const("s", tensor1(&[1.0f32]))?;
        let wired = QMatMulExpansion { transposed: true }.wire("q", &mut model, &[x, w, scale]);
        let message = format!("{:#}", wired.expect_err("empty weights must be refused"));
        assert!(message.contains("non-empty"), "{message}");
    }
    Ok(())
}

#[test]
fn one_token_products_on_rows_equal_the_packed_ones() -> TractResult<()> {
    use crate::kernels::tests::data;
    let (n, k) = (37, 384);
    let w: Vec<i8> = data(n * k, 3).iter().map(|&v| v as i8).collect();
    let w = Arc::new(Tensor::from_shape(&[n, k], &w)?);
    let x: Vec<f32> = data(k, 4).iter().map(|&v| (v as f32 - 100.0) / 37.0).collect();
    let scale: Vec<f32> = (0..n).map(|j| 0.01 + j as f32 * 1e-4).collect();
    let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.5 - 3.0).collect();
    let op = |weights| QMatMul { weights, scale: Arc::new(scale.clone()), bias: Arc::new(bias.clone()), k, n };
    let run = |op: QMatMul| -> TractResult<Vec<f32>> {
        let x = Tensor::from_shape(&[1, 1, k], &x)?.into_tvalue();
        let y = op.eval(&EvalContext::out_of_plan(), tvec!(x))?;
        Ok(y[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
    };
    let rows = run(op(Weights::Rows(w.clone())))?;
    let packed = run(op(Weights::Packed(PackedWeights::from_tensor(&w, Some(1))?)))?;
    assert_eq!(rows.len(), n);
    assert_eq!(rows, packed, "the integer sums are exact either way");
    Ok(())
}

#[test]
fn product_of_rows_equals_the_direct_sum() -> TractResult<()> {
    use crate::kernels::tests::data;
    // widths around the packings' block sizes, and a k that is not a multiple of 4
    for (n, k, rows) in [(24, 64, 1), (17, 30, 5), (40, 384, 33)] {
        let w: Vec<i8> = data(n * k, 1).iter().map(|&v| v as i8).collect();
        let x: Vec<i8> = data(rows * k, 2).iter().map(|&v| v as i8).collect();
        let packed = PackedWeights::from_tensor(&Tensor::from_shape(&[n, k], &w)?, Some(rows))?;
        let mut c = Tensor::zero::<i32>(&[rows, n])?;
        packed.product_rows(&x, rows, &mut c)?;
        let c = c.try_as_plain_ram()?.as_slice::<i32>()?.to_vec();
        for r in 0..rows {
            for j in 0..n {
                let direct: i32 = (0..k).map(|i| x[r * k + i] as i32 * w[j * k + i] as i32).sum();
                assert_eq!(c[r * n + j], direct, "row {r} column {j}, n={n} k={k} on {}", packed.kernel_name());
            }
        }
    }
    Ok(())
}
