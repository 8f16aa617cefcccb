{
  "targets": [
    {
      "target_name": "smolvlm_native",
      "sources": [
        "native/addon.cc",
        "native/cpu.cc",
        "native/threadpool.cc",
        "native/matmul.cc",
        "native/quant.cc",
        "native/attention.cc",
        "native/elementwise.cc",
        "native/mmap.cc",
        "native/peak.cc",
        "native/resample.cc"
      ],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-O3", "-fno-math-errno", "-pthread"],
      "cflags_cc": ["-O3", "-fno-math-errno", "-pthread"],
      "ldflags": ["-pthread"],
      "xcode_settings": {
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "GCC_OPTIMIZATION_LEVEL": "3",
        "OTHER_CPLUSPLUSFLAGS": ["-fno-math-errno"]
      },
      "msvs_settings": {
        "VCCLCompilerTool": { "AdditionalOptions": ["/std:c++17", "/O2"] }
      }
    }
  ]
}
