{
  "targets": [
    {
      "target_name": "peercred",
      "sources": ["peercred.cc"],
      "cflags_cc": ["-Wall", "-Wextra"]
    }
  ]
}
