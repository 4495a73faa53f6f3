//! Rewrites of an optimised detector graph that tract's own optimiser does not make.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::nn::Softmax;

/// Moves every float softmax whose axis is not the innermost one onto the innermost axis, between
/// two axis moves.
///
/// tract's softmax has a fast row kernel for the innermost axis only; any other axis takes an
/// element-by-element path. YOLOv8 and YOLO11 heads end in exactly that case: the distribution
/// focal loss decode is a softmax over the 16 bins of axis 1 of `[1, 16, 4, anchors]`, which took
/// about a quarter of a 640x640 YOLOv8n run on one thread. Two copies of that small tensor cost
/// far less than the slow path.
pub fn softmax_on_innermost_axis(model: &mut TypedModel) -> TractResult<usize> {
    let mut rewritten = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(softmax) = node.op_as::<Softmax>() else {
            continue;
        };
        let fact = model.outlet_fact(node.inputs[0])?;
        let rank = fact.rank();
        let [axis] = softmax.axes[..] else {
            continue;
        };
        if !fact.datum_type.is_float() || axis + 1 == rank {
            continue;
        }
        let innermost = rank - 1;
        let mut patch = TypedModelPatch::default();
        let input = patch.tap_model(model, node.inputs[0])?;
        let moved = patch.wire_node(
            format!("{}.axis-innermost", node.name),
            AxisOp::Move(axis, innermost),
            &[input],
        )?;
        let softmax = patch.wire_node(
            format!("{}.innermost", node.name),
            Softmax {
                axes: tvec![innermost],
                ..softmax.clone()
            },
            &moved,
        )?;
        let back = patch.wire_node(
            format!("{}.axis-back", node.name),
            AxisOp::Move(innermost, axis),
            &softmax,
        )?;
        patch.shunt_outside(model, id.into(), back[0])?;
        patch.apply(model)?;
        rewritten += 1;
    }
    Ok(rewritten)
}
