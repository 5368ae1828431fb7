//! Empty library target: lets the loader's build script declare a dependency on this crate so
//! cargo rebuilds the loader when the programs change. The programs live in the `tracer` binary,
//! built for the bpf target by aya-build.
#![no_std]
