;; A wasmcorn:app guest with two linear memories, written by hand: no compiler of ours makes a component whose core
;; modules define a memory each. The end-to-end tests compile it with the `wat` crate (sandbox.rs). Its `handle`
;; grows the main module's memory by 640 pages (40 MiB), then the second module's by as much, and returns the
;; outcome as its error message (the host answers 500 and logs it): "both memories grew by 40 MiB", or "the main
;; memory was refused" / "the second memory was refused". `--max-memory` bounds the two memories together.
(component
  (core module $second
    (memory (export "memory") 1)
    (func (export "grow") (param $pages i32) (result i32)
      (memory.grow (local.get $pages))))
  (core module $main
    (import "second" "grow" (func $grow_second (param i32) (result i32)))
    (memory (export "memory") 1)
    ;; The messages, and the return area of `handle` (a result: its case at 64, the string's address and length).
    (data (i32.const 16) "both memories grew by 40 MiB")
    (data (i32.const 48) "the main memory was refused")
    (data (i32.const 80) "the second memory was refused")
    (global $next (mut i32) (i32.const 1024))
    ;; A bump allocator for the environ the host lowers (it never frees).
    (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32)
      (result i32)
      (local $at i32)
      (local.set $at
        (i32.and
          (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
          (i32.xor (i32.sub (local.get $align) (i32.const 1)) (i32.const -1))))
      (global.set $next (i32.add (local.get $at) (local.get $size)))
      (local.get $at))
    (func $answer (param $message i32) (param $length i32) (result i32)
      (i32.store8 (i32.const 128) (i32.const 1))
      (i32.store (i32.const 132) (local.get $message))
      (i32.store (i32.const 136) (local.get $length))
      (i32.const 128))
    (func (export "handle") (param $environ i32) (param $pairs i32) (result i32)
      (if (i32.eq (memory.grow (i32.const 640)) (i32.const -1))
        (then (return (call $answer (i32.const 48) (i32.const 27)))))
      (if (i32.eq (call $grow_second (i32.const 640)) (i32.const -1))
        (then (return (call $answer (i32.const 80) (i32.const 29)))))
      (call $answer (i32.const 16) (i32.const 28))))
  (core instance $second (instantiate $second))
  (core instance $main (instantiate $main (with "second" (instance $second))))
  (func (export "handle") (param "environ" (list (tuple string string))) (result (result (error string)))
    (canon lift (core func $main "handle") (memory (core memory $main "memory"))
      (realloc (core func $main "cabi_realloc")))))
