// Vite's side-effect CSS imports.
declare module "*.css";
