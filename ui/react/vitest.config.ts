import { defineConfig } from "vitest/config";

// Component tests in jsdom against a real `caas serve` (CAAS_URL, started by tests/ui/test_react_kit.py)
export default defineConfig({
  test: {
    environment: "jsdom",
    include: ["test/**/*.test.{ts,tsx}"],
    setupFiles: ["test/setup.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    fileParallelism: false,
  },
});
