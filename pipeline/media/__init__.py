"""Media decoding: a video or image file -> 8 fps clip windows (RGB + 16 kHz mono audio); the public names.

One interface (`probe_and_decode`), two frame decoders (PyAV, decord; PyAV is the default, see
docs/architecture.md "Media decoding" for the measurements and the reason). Probing and audio always
use PyAV.

The 8 fps pick (exact rationals, variable frame rate included) is in windows.py; the audio cut in
audio.py.

On H.264/HEVC the PyAV backend indexes the packets first (demux only), applies this rule to the
index and does not decode the non-reference frames that no window picks (`skip_unneeded_frames`);
the clips are bit-identical to decoding every frame (see `_decode_pyav`).

Spatial formats (config.FORMATS): the frame is scaled to cover the target and centre-cropped: the LM's
"square" 128x128 and "portrait" 128 wide x 224 high, and the SR cascade's "square_2x" 256x256,
"portrait_2x" 256x448, "portrait_4x" 512x896. Shrinking is area averaging: with PyAV one libswscale
pass from YUV to planar RGB at the cover size, then the crop of the planes is interleaved; with decord
(full-size RGB) the crop is cut in source pixels and resized with OpenCV INTER_AREA. Enlarging is
OpenCV INTER_CUBIC (area would degenerate to bilinear there).

Failures raise MediaError(stage, error_class, message). `decode_with_timeout` runs the decode in a
persistent worker process that is killed and restarted when one input passes the time limit (a
native hang that holds the GIL, e.g. decord #373, cannot be interrupted any other way).

Modules: config (MediaConfig, constants), errors (MediaError), clip (DecodedClip), geometry
(crop_box, resize_crop), windows (the 8 fps pick and window plan), probe (open, probe), audio,
frames (PyAV frame -> formats), pyav (full/skip decoding), pyav_seek (seek mode), decord_backend,
images, decode (probe_and_decode), worker (DecodeWorker, decode_with_timeout), writer (write_mp4,
write_wav). The flow/depth conditions are videopoet.pipeline.conditions.
"""


from videopoet.pipeline.media.audio import downmix_weights
from videopoet.pipeline.media.clip import DecodedClip
from videopoet.pipeline.media.config import AUDIO_RATE, CLIP_FPS, FORMATS, IMAGE_EXTENSIONS, MediaConfig
from videopoet.pipeline.media.decode import probe_and_decode
from videopoet.pipeline.media.errors import MediaError
from videopoet.pipeline.media.geometry import crop_box, resize_crop
from videopoet.pipeline.media.windows import count_windows, select_windows
from videopoet.pipeline.media.worker import DecodeWorker, decode_with_timeout
from videopoet.pipeline.media.writer import write_mp4, write_wav

__all__ = [
    "AUDIO_RATE", "CLIP_FPS", "FORMATS", "IMAGE_EXTENSIONS", "DecodeWorker", "DecodedClip", "MediaConfig",
    "MediaError", "count_windows", "crop_box", "decode_with_timeout", "downmix_weights", "probe_and_decode",
    "resize_crop", "select_windows", "write_mp4", "write_wav",
]
