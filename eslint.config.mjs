// Lint: rules that catch real bugs (typescript-eslint's recommended set plus the type-aware
// promise rules), not style: formatting is prettier's job (.prettierrc.json).
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/", ".build/", ".demo/", ".ci/", "node_modules/", "test/artifacts/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ["**/*.ts"],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // A promise nobody awaits or catches loses its error (an unhandled rejection ends Node).
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/await-thenable": "error",
      "@typescript-eslint/no-for-in-array": "error",
      "@typescript-eslint/no-implied-eval": "error",
      "@typescript-eslint/only-throw-error": "error",
      "@typescript-eslint/switch-exhaustiveness-check": ["error", { considerDefaultExhaustiveForUnions: true }],
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_", caughtErrors: "none" }],
      // Node-RED node constructors keep `const node = this` for callbacks (the documented idiom);
      // `self` where an object literal's getters need the outer instance.
      "@typescript-eslint/no-this-alias": ["error", { allowedNames: ["node", "self"] }],
    },
  },
  {
    // Tests and benchmarks reach into private fields and untyped peers (any), and require()
    // node-dtls-client or the package itself on purpose (require(esm), the published entry).
    files: ["test/**/*.ts", "bench/**/*.ts"],
    linterOptions: { reportUnusedDisableDirectives: "off" },
    rules: { "@typescript-eslint/no-explicit-any": "off", "@typescript-eslint/no-require-imports": "off" },
  },
  {
    // Plain Node scripts (CommonJS): the build and the benchmark driver.
    files: ["**/*.js", "**/*.cjs"],
    languageOptions: {
      sourceType: "commonjs",
      globals: { require: "readonly", module: "writable", process: "readonly", __dirname: "readonly", console: "readonly" },
    },
    rules: { "@typescript-eslint/no-require-imports": "off" },
  },
  {
    // Scripts the editor loads in the browser.
    files: ["resources/**/*.js"],
    languageOptions: { sourceType: "script", globals: { window: "readonly", globalThis: "readonly" } },
  },
);
