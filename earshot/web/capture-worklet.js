// An AudioWorklet that turns the microphone into 24 kHz mono PCM16 (little-endian) chunks of 100 ms.
// The AudioContext runs at the device's own rate (browsers differ in what they accept for a microphone), so
// this resamples: each output sample averages the input samples its interval covers, which also keeps
// frequencies above the new Nyquist limit from folding back when downsampling.

const TARGET_RATE_HZ = 24000;
const CHUNK_SAMPLES = TARGET_RATE_HZ / 10;

class Pcm16Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE_HZ; // input samples per output sample
    this.position = 0; // where the next output sample starts, in input samples from the current block
    this.sum = 0;
    this.count = 0;
    this.previous = 0;
    this.chunk = new Int16Array(CHUNK_SAMPLES);
    this.filled = 0;
  }

  emit(value) {
    const clamped = Math.max(-1, Math.min(1, value));
    this.chunk[this.filled++] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
    if (this.filled === CHUNK_SAMPLES) {
      this.port.postMessage(this.chunk.buffer, [this.chunk.buffer]);
      this.chunk = new Int16Array(CHUNK_SAMPLES);
      this.filled = 0;
    }
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const frames = channels[0].length;
    for (let i = 0; i < frames; i++) {
      let sample = 0;
      for (const channel of channels) sample += channel[i];
      sample /= channels.length;
      if (this.step >= 1) {
        this.sum += sample;
        this.count += 1;
        if (i + 1 >= this.position + this.step) {
          this.emit(this.sum / this.count);
          this.sum = 0;
          this.count = 0;
          this.position += this.step;
        }
      } else {
        // Upsampling: interpolate between the previous input sample and this one.
        while (this.position <= i) {
          const fraction = this.position - (i - 1);
          this.emit(this.previous + (sample - this.previous) * fraction);
          this.position += this.step;
        }
        this.previous = sample;
      }
    }
    this.position -= frames;
    return true;
  }
}

registerProcessor("pcm16-capture", Pcm16Capture);
