{
  "targets": [
    {
      "target_name": "topiary_native",
      "sources": ["topiary_native.c"],
      "cflags_c": ["-std=gnu11", "-O3", "-fopenmp-simd", "-fno-trapping-math", "-Wall", "-Wextra"],
      "libraries": ["-lopenblas", "-lpthread"]
    }
  ]
}
