import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// Served by `caas serve --demo` under /demo/ (api/ui.py); `npm run dev` proxies the API to a local server.
export default defineConfig({
  base: "/demo/",
  plugins: [react()],
  // @caas/react and @caas/client are linked from the repository: one React for all of them
  resolve: { dedupe: ["react", "react-dom"], preserveSymlinks: false },
  build: { outDir: "dist", emptyOutDir: true, target: "es2022" },
  server: {
    proxy: {
      "/v1": { target: "http://127.0.0.1:8000", ws: true },
      "/demo/session": "http://127.0.0.1:8000",
    },
  },
});
