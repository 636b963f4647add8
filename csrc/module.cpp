// Python module init for ssl_bench._C.
//
// The operators themselves are registered with the PyTorch dispatcher by the other files in
// csrc/ (TORCH_LIBRARY_FRAGMENT(ssl_bench, ...) and TORCH_LIBRARY_IMPL(ssl_bench, <key>, ...));
// importing this module loads the shared library, which runs those registrations, after which
// the ops are reachable as torch.ops.ssl_bench.<name>. The module itself only reports how it
// was built.
#include <Python.h>

namespace {

PyObject* with_cuda(PyObject*, PyObject*) {
#ifdef SSL_BENCH_WITH_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

PyMethodDef methods[] = {
    {"with_cuda", with_cuda, METH_NOARGS, "True when the CUDA kernels were compiled into this build."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_C", "ssl-bench compiled operators (registered as torch.ops.ssl_bench.*).", -1, methods,
};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }
