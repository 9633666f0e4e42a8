;; A function type declared as an open subtype of another (GC subtyping).
(component (core module (type $base (sub (func))) (type (sub $base (func)))))
