import js from "@eslint/js";
import tseslint from "typescript-eslint";
import globals from "globals";

export default tseslint.config(
  { ignores: ["dist/**", "node_modules/**", ".data/**", "coverage/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/no-explicit-any": "error",
      "no-console": ["error", { allow: ["error"] }],
    },
  },
  {
    files: ["test/**"],
    rules: { "no-console": ["error", { allow: ["error", "warn"] }] },
  },
  {
    files: ["bin/**/*.js", "eslint.config.js", "test/**/*.mjs"],
    languageOptions: { globals: globals.node },
  },
  {
    files: ["src/cli/**", "bench/**", "bin/**", "scripts/**", "test/**/*.mjs"],
    rules: { "no-console": "off" },
  },
);
