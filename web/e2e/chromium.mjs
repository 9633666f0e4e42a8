// The flags every e2e script starts Debian's Chromium with: headless on a
// closed network, and WebGPU on SwiftShader (`--enable-unsafe-webgpu`;
// without it requestAdapter() answers null here).
export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--enable-unsafe-webgpu'];
