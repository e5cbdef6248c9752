# The stderr-capture addon: built by scripts/native/install.ts with npm's node-gyp, next to the native package.
{
  "targets": [
    {
      "target_name": "stderr_capture",
      "sources": ["stderr_capture.cc"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
