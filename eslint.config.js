// ESLint for frontend/ (flat config): the recommended rules plus a few that catch real bugs.
// `make lint` runs it with tsc --checkJs (tsconfig.json, tsconfig.app.json); see docs/client.md.
import js from "@eslint/js";
import globals from "globals";

const bugCatchers = {
  "no-unused-vars": ["error", { args: "after-used", caughtErrors: "none", ignoreRestSiblings: true }],
  eqeqeq: ["error", "always", { null: "ignore" }],
  "no-implicit-globals": "error",
  "no-shadow": ["error", { builtinGlobals: false }],
  "no-var": "error",
  "prefer-const": ["error", { destructuring: "all" }],
  "no-implicit-coercion": ["error", { allow: ["!!"] }],
  "no-self-compare": "error",
  "no-template-curly-in-string": "error",
  "no-unmodified-loop-condition": "error",
  "no-unreachable-loop": "error",
  // a closure may name a later declaration (it runs after); the same scope may not
  "no-use-before-define": ["error", { functions: false, classes: true, variables: false }],
  "no-constructor-return": "error",
  "no-await-in-loop": "off",
  "require-atomic-updates": "off",
  "array-callback-return": "error",
  "no-useless-concat": "error",
  "no-useless-return": "error",
  radix: "error",
};

export default [
  { ignores: ["node_modules/", ".venv/", ".venv-deploy/", "build/", ".local/", ".chalice/"] },
  js.configs.recommended,
  {
    // the client library and the pages: ES modules in the browser (and the library in Node's tests)
    files: ["frontend/app/**/*.js", "frontend/lib/**/*.js"],
    languageOptions: { ecmaVersion: 2022, sourceType: "module", globals: { ...globals.browser } },
    rules: bugCatchers,
  },
  {
    // the embed tag's loader: a classic script, so that it can read document.currentScript
    files: ["frontend/widget.js"],
    languageOptions: { ecmaVersion: 2020, sourceType: "script", globals: { ...globals.browser } },
    rules: { ...bugCatchers, "no-var": "off", "prefer-const": "off" },
  },
  {
    // Node's test runner over the library, with fakes of the browser's APIs
    files: ["frontend/tests/**/*.mjs"],
    languageOptions: { ecmaVersion: 2022, sourceType: "module", globals: { ...globals.node, ...globals.browser } },
    rules: { ...bugCatchers, "no-shadow": "off", "no-use-before-define": "off" },
  },
  {
    files: ["eslint.config.js"],
    languageOptions: { sourceType: "module", globals: { ...globals.node } },
  },
];
