// The console is a static app served by the proxy itself (embedded into the binary at build
// time), so the build must need nothing at run time from elsewhere: no inline scripts or styles
// (the proxy's Content-Security-Policy allows only 'self'), no data: URIs for assets, no
// module-preload polyfill injected inline.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    target: "es2022",
  },
});
