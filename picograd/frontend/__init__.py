"""The frontend's op families (frontend layer): mixins that `picograd.tensor.Tensor` inherits.

Each module holds one family of PyTorch-named ops composed from the primitives the Tensor
class builds (movement ops, elementwise ops, reductions), so every op here gets gradients
and fusion for free. Mixins only call methods on `self` and build new tensors through
`type(self)`, so nothing here imports `picograd.tensor` (no import circle).

Mixin methods annotate `self: Any`: mypy sees each mixin alone, so it knows neither the
attributes Tensor adds nor the other mixins' methods, and it rejects a `self: Tensor` (a
subclass) as the self type. Arguments and return types (`-> Tensor`) are still checked.
"""
