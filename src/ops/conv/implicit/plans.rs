//! The gathers' plans of one task, built once and reused across its
//! products ([`Plans`]), and the input they read for an image.

use super::super::geom::ConvGeom;
use super::gather::{Layout, RunPlan};
use super::split_columns::{reads_split_columns, split_columns, Source};

/// Most loads, over all plans, that [`Plans`] keeps (256 KB).
const PLANS_KEPT_LOADS: usize = 16 << 10;

/// The plans of one task's products, built once and reused: the products
/// of a tile's images (and groups) gather the same runs of pixels, from
/// inputs that start elsewhere. On the 3×3 RGB stem, one product per
/// image, building each image's plan took as long as its gathers.
/// Large plans are not kept: a plan is read whole for every channel, and
/// the 7×7 stem's (7 runs of 2048 pixels, 100–200 KB of loads each)
/// read from beyond L2 made its forward 17 % slower than built anew.
///
/// With an order ([`Plans::in_order`]), the runs are of product columns
/// whose pixels the order names.
pub(super) struct Plans {
    kept: Vec<((usize, usize, Layout), RunPlan)>,
    order: Option<Vec<u32>>,
    source: Source,
}

impl Default for Plans {
    /// Plans of runs of pixels over the planes as they are.
    fn default() -> Self {
        Plans {
            kept: Vec::new(),
            order: None,
            source: Source::Planes,
        }
    }
}

impl Plans {
    /// The plan of `RunPlan::new(g, q0, len, layout)`, built unless kept.
    /// Plans are kept up to [`PLANS_KEPT_LOADS`] loads in all, all dropped
    /// when a new one would exceed that; the geometry must be the same on
    /// every call.
    pub(super) fn get(&mut self, g: &ConvGeom, q0: usize, len: usize, layout: Layout) -> &RunPlan {
        let key = (q0, len, layout);
        let at = match self.kept.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                let plan = RunPlan::new(g, q0, len, layout, self.order.as_deref(), self.source);
                let kept: usize = self.kept.iter().map(|(_, p)| p.load_count()).sum();
                if kept + plan.load_count() > PLANS_KEPT_LOADS {
                    self.kept.clear();
                }
                self.kept.push((key, plan));
                self.kept.len() - 1
            }
        };
        &self.kept[at].1
    }

    /// Plans of runs of product columns rather than of pixels: column `j`
    /// is pixel `order[j]` (numbered as in [`RunPlan::new`]).
    pub(super) fn in_order(order: Vec<u32>) -> Self {
        Plans {
            order: Some(order),
            ..Plans::default()
        }
    }

    /// Plans of runs of pixels of one image at a time, over its
    /// column-split copy where [`reads_split_columns`] (see
    /// [`Plans::image`]).
    pub(super) fn per_image(g: &ConvGeom) -> Self {
        let source = if reads_split_columns(g) {
            Source::SplitColumns
        } else {
            Source::Planes
        };
        Plans {
            source,
            ..Plans::default()
        }
    }

    /// The input the plans read for one image's group `x` (its `cg`
    /// planes first): `x` itself, or its column-split copy written into
    /// `copy` for [`Source::SplitColumns`].
    pub(super) fn image<'a>(
        &self,
        x: &'a [f32],
        g: &ConvGeom,
        copy: &'a mut Vec<f32>,
    ) -> &'a [f32] {
        if self.source == Source::Planes {
            return x;
        }
        let len = g.cg() * g.h * g.w;
        copy.resize(len, 0.0);
        split_columns(&x[..len], g.w, copy);
        copy
    }

    /// The plans kept.
    #[cfg(test)]
    pub(super) fn kept(&self) -> usize {
        self.kept.len()
    }
}
