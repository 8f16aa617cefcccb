/** An 8-bit RGB image, pixels interleaved row by row (R, G, B, R, G, B, ...). */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}
