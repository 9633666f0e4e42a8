;; A GC struct type (the GC proposal: wasmtime is built without it).
(component (core module (type (struct (field i32)))))
