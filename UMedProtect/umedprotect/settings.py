"""The protection settings: one table of options (range, default, unit, help) for every front end.

The CLI, the Slicer panel's parameter node and the batch script build their options from
:data:`OPTIONS`; :class:`ProtectionSettings` holds one choice of them and checks it against the
table. Errors name the option (``InputError.option``) so that each front end can word it in its
own terms (``--epsilon`` on the command line, "Budget ε" in Slicer).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .errors import InputError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
CODES = ("fill", "rings", "fill+rings", "smooth")  # the bundled codes (umedprotect.methods.setup_method)
# dB: the floor of the fill codes within fill+rings, which stopped victims without augmentation on CT liver alone
# (docs/results.md, fill-inside-liver); the rings take the rest of the floor's energy
FILL_RINGS_FILL_MIN_PSNR = 52.0
MAX_STRENGTH = 5.0  # victim units
NORMALISATIONS = ("ct", "zscore")  # nnU-Net's normalisations a victim applies (umedprotect.victim_units)

CT_PRESETS = {"ct-soft-tissue": (40.0, 400.0), "ct-lung": (-600.0, 1500.0), "ct-bone": (400.0, 1800.0)}  # L, W in HU
WINDOW_CHOICES = ("auto", *CT_PRESETS, "percentile")  # the heatmap's display windows, or LEVEL,WIDTH


@dataclass(frozen=True)
class Option:
    """One protection option: its accepted range, default, unit and help text."""

    name: str  # field of ProtectionSettings
    flag: str  # command-line flag
    label: str  # name in the Slicer panel
    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the range excludes ``low``
    default: object = None  # None: the protector's own value, or no limit
    unit: str = ""
    help: str = ""
    choices: tuple[str, ...] | None = None  # the accepted values of a choice option

    def accepts(self, value) -> bool:
        """Whether ``value`` is within this option's range and choices (``None``: the default, always)."""
        if value is None:
            return True
        if self.choices is not None:
            return value in self.choices
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        return not below and not (self.high is not None and value > self.high)

    def check(self, value) -> None:
        """Raise :class:`InputError` naming this option when ``value`` is outside its range or choices."""
        if self.accepts(value):
            return
        if self.choices is not None:
            raise InputError(f"{value!r} is not one of {', '.join(self.choices)}", option=self.name)
        unit = f" {self.unit}" if self.unit else ""
        raise InputError(f"{value:g} is out of range {self.range_text()}{unit}", option=self.name)

    def range_text(self) -> str:
        """The accepted range in interval notation, e.g. ``(0, 64]`` (options with both bounds)."""
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"


OPTIONS: dict[str, Option] = {
    o.name: o
    for o in (
        Option(
            "epsilon",
            "--epsilon",
            "Budget ε",
            float,
            0.0,
            64.0,
            low_open=True,
            unit="(units of 1/255 of the intensity window)",
            help="budget in 1/255 of the case's intensity window (default: the protector's)",
        ),
        Option(
            "codes",
            "--codes",
            "Codes",
            str,
            choices=CODES,
            help="the bundled protector's codes: fill (default; one fine checkerboard inside every label, which "
            "victims trained without augmentation take for the labels), rings (bands along each label's contour, "
            "which nnU-Net's augmentation keeps; measured on one CT organ, also with --epsilon 6.3 --min-psnr 45 "
            "against victims without it; visible at a soft-tissue window), fill+rings (both: the fill codes held "
            "to 52 dB, the rings to the rest of the floor; measured on one CT organ, where both kinds of victim "
            "need --min-psnr 48) or smooth (each label's own noise smoothed away, which both kinds of victim take "
            "for the label; measured on one CT organ, not on several labels, MR or microscopy; seen as a label "
            "smoother than its surroundings)",
        ),
        Option(
            "band_radius",
            "--band-radius",
            "Contour band",
            int,
            0,
            32,
            unit="pixels",
            help="contour band half-width in pixels (default: the protector's)",
        ),
        Option(
            "min_psnr",
            "--min-psnr",
            "Minimum PSNR",
            float,
            20.0,
            120.0,
            unit="dB",
            help="scale the perturbation down where a case's PSNR would fall below this -- a 2D image's, or every "
            "slice's of a volume (default: the protector's floor, 50 for the bundled one)",
        ),
        Option(
            "batch_size",
            "--batch-size",
            "Batch size",
            int,
            1,
            4096,
            default=16,
            help="slices per forward pass (default 16)",
        ),
        Option(
            "seed",
            "--seed",
            "Seed",
            int,
            default=0,
            help="random seed; same inputs + protector + seed give byte-identical outputs (default 0)",
        ),
        Option(
            "device",
            "--device",
            "Device",
            str,
            default="auto",
            choices=DEVICE_CHOICES,
            help="compute device (default: auto = CUDA if available, else CPU)",
        ),
    )
}


@dataclass(frozen=True)
class ProtectionSettings:
    """One choice of protection options; ``None`` takes the protector's own value (or no floor)."""

    protector: str | None = None  # protector file; None: the bundled one of ``codes``
    codes: str | None = None  # the bundled protector's codes (CODES); None: fill
    epsilon: float | None = None
    band_radius: int | None = None
    labels: tuple[int, ...] | None = None  # label values to protect; None: every non-zero label
    min_psnr: float | None = None
    batch_size: int = 16
    seed: int = 0
    device: str = "auto"
    # per numpy axis: the spacing an nnU-Net victim resamples each case to, the change then made on that grid
    # (protect-dataset: the training cases' median, where nnU-Net resamples some); None: each case's own grid
    victim_spacing: tuple[float, ...] | None = None
    # the change's RMS to reach before the PSNR floor, in victim units (umedprotect.victim_units); None: the
    # default (victim_units.STRENGTHS, by normalisation) unless epsilon is given; 0: off
    strength: float | None = None
    # how the victim normalises each case, which sets its unit: "ct" (nnU-Net's CT normalisation) or "zscore";
    # None: zscore (protect: ct for a CT image; protect-dataset: as dataset.json's channel says)
    victim_normalisation: str | None = None

    def __post_init__(self) -> None:
        for option in OPTIONS.values():
            option.check(getattr(self, option.name))
        if self.codes is not None and self.protector is not None:
            raise InputError("chooses a bundled protector: leave it out with a protector file", option="codes")
        if self.codes == "fill+rings" and self.min_psnr is not None and self.min_psnr >= FILL_RINGS_FILL_MIN_PSNR:
            raise InputError(
                f"{self.min_psnr:g} dB leaves the rings of --codes fill+rings nothing: give a floor below "
                f"{FILL_RINGS_FILL_MIN_PSNR:g} dB, where the fill codes are held",
                option="min_psnr",
            )
        if self.codes == "smooth":
            for name in ("band_radius", "strength"):
                if getattr(self, name):
                    raise InputError("applies to the bundled codes, not to the smooth code", option=name)
        if self.strength is not None and not 0 <= self.strength <= MAX_STRENGTH:
            raise InputError(f"{self.strength:g} is out of range [0, {MAX_STRENGTH:g}] victim units", option="strength")
        if self.victim_normalisation not in (None, *NORMALISATIONS):
            raise InputError(
                f"{self.victim_normalisation!r}: one of {', '.join(NORMALISATIONS)}", option="victim_normalisation"
            )
        if self.victim_spacing is not None and (not self.victim_spacing or min(self.victim_spacing) <= 0):
            raise InputError(f"{list(self.victim_spacing)}: give positive spacings", option="victim_spacing")
        if self.labels is not None and (not self.labels or min(self.labels) <= 0):
            raise InputError(f"{list(self.labels)}: give positive label values, e.g. 1,2", option="labels")

    def recorded(self) -> dict:
        """The settings as written to reports and manifests (labels and spacings as lists)."""
        values = asdict(self)
        values["labels"] = None if self.labels is None else list(self.labels)
        values["victim_spacing"] = None if self.victim_spacing is None else list(self.victim_spacing)
        return values

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
