//! The two walks between a burn module and a flat `f32` parameter vector: [`Loader`] (a
//! [`ModuleMapper`]) fills a module's parameters from the vector, [`Flattener`] (a
//! [`ModuleVisitor`]) reads them back into it.
//!
//! Both walk the module in burn's visiting order (struct fields in declaration order,
//! `Vec` elements by index, `weight` before `bias`) and demand that the `i`-th float
//! parameter's dotted path and shape equal the `i`-th tensor of the canonical layout. That
//! is stricter than looking tensors up by name: it also pins the *order*, so the proximal
//! term (which pairs module parameters with anchor tensors by position, see
//! [`super::Network::parameters`]) cannot pair the wrong tensors either. A mismatch is
//! recorded, never guessed around, and reported as [`ModelError::Layout`].
//!
//! Paths: struct fields and `Vec` indices are path components; an `enum` variant is not
//! (burn's derive enters it as a module of container type `Enum:…`, which we skip), so
//! `Network::Mlp(Mlp { hidden, .. })` yields `hidden.0.weight`, exactly the layout name.
//! `Option` fields add no component in burn either (`bias`, not `bias.Some`).
//!
//! Values move as raw `f32` in both directions (`TensorData` of dtype f32, no conversion),
//! so loading then flattening is bit-exact, `-0.0`, subnormals and NaN payloads included.

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};

use super::ModelError;
use fedra_types::model::{TensorLayout, TensorSpec};

/// Dotted module path, ignoring enum variants (see the module doc).
#[derive(Default)]
struct Path {
    parts: Vec<String>,
    /// Per entered module: whether it pushed a component (enum variants do not).
    pushed: Vec<bool>,
}

impl Path {
    fn enter(&mut self, name: &str, container_type: &str) {
        let push = !container_type.starts_with("Enum:");
        if push {
            self.parts.push(name.to_owned());
        }
        self.pushed.push(push);
    }

    fn exit(&mut self) {
        if self.pushed.pop() == Some(true) {
            self.parts.pop();
        }
    }

    fn join(&self) -> String {
        self.parts.join(".")
    }
}

/// Position in the layout plus the first mismatch seen, shared by both walks.
struct LayoutCursor<'a> {
    layout: &'a TensorLayout,
    index: usize,
    error: Option<ModelError>,
}

impl<'a> LayoutCursor<'a> {
    fn new(layout: &'a TensorLayout) -> Self {
        Self { layout, index: 0, error: None }
    }

    /// The layout tensor the next module parameter must be, if it is (path and shape).
    fn next(&mut self, path: String, shape: &[usize]) -> Option<&'a TensorSpec> {
        let index = self.index;
        self.index += 1;
        if self.error.is_some() {
            return None;
        }
        let want = self.layout.tensors.get(index);
        match want {
            Some(want) if want.name == path && want.shape == shape => Some(want),
            _ => {
                self.error = Some(ModelError::Layout {
                    index,
                    found: format!("{path}{shape:?}"),
                    expected: want.map_or_else(|| "nothing".to_owned(), |t| format!("{}{:?}", t.name, t.shape)),
                });
                None
            }
        }
    }

    /// Ends the walk: the first mismatch, or one for a layout tensor the module lacked.
    fn finish(self) -> Result<(), ModelError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        match self.layout.tensors.get(self.index) {
            Some(missing) => Err(ModelError::Layout {
                index: self.index,
                found: "nothing".to_owned(),
                expected: format!("{}{:?}", missing.name, missing.shape),
            }),
            None => Ok(()),
        }
    }
}

/// Replaces every float parameter by its slice of a flat vector (length checked by the
/// caller). Parameters keep their device and gradient setting; lazily initialised ones are
/// replaced without ever running their initializer.
pub(super) struct Loader<'a> {
    path: Path,
    cursor: LayoutCursor<'a>,
    flat: &'a [f32],
    offset: usize,
}

impl<'a> Loader<'a> {
    pub(super) fn new(layout: &'a TensorLayout, flat: &'a [f32]) -> Self {
        Self { path: Path::default(), cursor: LayoutCursor::new(layout), flat, offset: 0 }
    }

    /// # Errors
    /// [`ModelError::Layout`] when the module's parameters are not the layout's tensors.
    pub(super) fn finish(self) -> Result<(), ModelError> {
        self.cursor.finish()
    }
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let shape = param.lazy_shape().to_vec();
        let Some(want) = self.cursor.next(self.path.join(), &shape) else {
            return param;
        };
        let values = &self.flat[self.offset..self.offset + want.numel()];
        self.offset += want.numel();
        let tensor = Tensor::<D>::from_data(TensorData::new(values.to_vec(), shape), &param.lazy_device());
        let id = param.id;
        param.transform_for_load(tensor, id)
    }
}

/// Collects every float parameter's values, checked against the layout, in layout order.
pub(super) struct Flattener<'a> {
    path: Path,
    cursor: LayoutCursor<'a>,
    flat: Vec<f32>,
}

impl<'a> Flattener<'a> {
    pub(super) fn new(layout: &'a TensorLayout) -> Self {
        Self { path: Path::default(), cursor: LayoutCursor::new(layout), flat: Vec::with_capacity(layout.total()) }
    }

    /// # Errors
    /// [`ModelError::Layout`] when the module's parameters are not the layout's tensors.
    pub(super) fn finish(self) -> Result<Vec<f32>, ModelError> {
        self.cursor.finish()?;
        Ok(self.flat)
    }
}

impl ModuleVisitor for Flattener<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = param.val();
        if self.cursor.next(self.path.join(), &tensor.dims()).is_some() {
            self.flat.extend_from_slice(&read_f32(tensor.into_data()));
        }
    }
}

/// Every float parameter as a rank-1 tensor, in visiting order (= layout order once a
/// [`Loader`] has accepted the module). On an autodiff device they stay in the graph.
#[derive(Default)]
pub(super) struct ParamCollector {
    pub(super) tensors: Vec<Tensor<1>>,
}

impl ModuleVisitor for ParamCollector {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = param.val();
        let numel = tensor.shape().num_elements();
        self.tensors.push(tensor.reshape([numel]));
    }
}

/// Host copy of an f32 tensor's values, bit for bit.
///
/// # Panics
/// If the tensor is not f32: fedra creates only f32 float tensors.
pub(crate) fn read_f32(data: TensorData) -> Vec<f32> {
    data.try_into_vec::<f32>().expect("fedra creates only f32 tensors")
}
