// `after(a, b)`: a copy of a, made once b exists. XLA orders operations by their data
// dependencies alone; two large independent ones it starts at the same time each spread
// over both cores of this machine and slow each other down. An operand passed through
// this call makes its user wait for b (XLA cannot see through the call). projection.py
// orders the output layer's backward products with it.
#include <cstring>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

static ffi::Error CopyAfter(ffi::AnyBuffer a, ffi::AnyBuffer /*b*/, ffi::Result<ffi::AnyBuffer> copy) {
  if (copy->size_bytes() != a.size_bytes())
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "after: the copy's size differs from a's");
  std::memcpy(copy->untyped_data(), a.untyped_data(), a.size_bytes());
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(After, CopyAfter,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // a
                                  .Arg<ffi::AnyBuffer>()  // b
                                  .Ret<ffi::AnyBuffer>());  // a copy of a
