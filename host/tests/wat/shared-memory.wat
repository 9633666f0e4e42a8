;; A shared memory (the threads proposal).
(component (core module (memory 1 1 shared)))
