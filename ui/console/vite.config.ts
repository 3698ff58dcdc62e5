import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";

// Served by `caas serve` under /console/ (api/ui.py); `npm run dev` proxies the portal's API to a local server.
export default defineConfig({
  base: "/console/",
  plugins: [react()],
  build: { outDir: "dist", emptyOutDir: true, target: "es2022", chunkSizeWarningLimit: 1024 },
  server: { proxy: { "/console/api": { target: "http://127.0.0.1:8000", ws: true } } },
  test: { environment: "jsdom", include: ["src/**/*.test.tsx", "src/**/*.test.ts"], setupFiles: ["src/test/setup.ts"] },
});
