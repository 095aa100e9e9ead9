// htm bound to Preact: JSX-like templates without a compiler (vendor/VENDOR.md).
import { h } from "preact";
import htm from "htm";

export const html = htm.bind(h);
