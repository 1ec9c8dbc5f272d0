"""The theme setting: follow the system, or force light or dark, kept in QSettings.

Forced themes use the Fusion style with a complete palette (every role the views read,
placeholder text and disabled text included), so no widget falls back to a colour chosen
for the other background."""

from __future__ import annotations

from PySide6.QtCore import QSettings
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

THEMES = ("system", "light", "dark")
SETTINGS_KEY = "ui/theme"

_DARK = {
    "Window": "#25272b", "WindowText": "#e6e6e6", "Base": "#1c1e21", "AlternateBase": "#2a2d31",
    "ToolTipBase": "#2f3237", "ToolTipText": "#f0f0f0", "PlaceholderText": "#9aa0a8", "Text": "#e6e6e6",
    "Button": "#303338", "ButtonText": "#e6e6e6", "BrightText": "#ff6b6b", "Light": "#4a4e55",
    "Midlight": "#3b3f45", "Mid": "#6b7079", "Dark": "#17181b", "Shadow": "#0c0c0d",
    "Highlight": "#3d7dd8", "HighlightedText": "#ffffff", "Link": "#7fb2ff", "LinkVisited": "#b59cff",
}
_DARK_DISABLED = {"WindowText": "#7d828a", "Text": "#7d828a", "ButtonText": "#7d828a", "PlaceholderText": "#6a6f77"}
_LIGHT = {
    "Window": "#efefef", "WindowText": "#1a1a1a", "Base": "#ffffff", "AlternateBase": "#f5f6f7",
    "ToolTipBase": "#ffffdc", "ToolTipText": "#1a1a1a", "PlaceholderText": "#6d7278", "Text": "#1a1a1a",
    "Button": "#e8e8e8", "ButtonText": "#1a1a1a", "BrightText": "#c00000", "Light": "#ffffff",
    "Midlight": "#f3f3f3", "Mid": "#888888", "Dark": "#707070", "Shadow": "#505050",
    "Highlight": "#2f6fd1", "HighlightedText": "#ffffff", "Link": "#1a5fb4", "LinkVisited": "#6a3fb4",
}
_LIGHT_DISABLED = {"WindowText": "#8c8c8c", "Text": "#8c8c8c", "ButtonText": "#8c8c8c", "PlaceholderText": "#a8a8a8"}

_system_palette: QPalette | None = None
_system_style: str | None = None


def palette_for(theme: str) -> QPalette:
    """The full palette of a forced theme ("light" or "dark")."""
    roles, disabled = (_DARK, _DARK_DISABLED) if theme == "dark" else (_LIGHT, _LIGHT_DISABLED)
    pal = QPalette()
    for name, colour in roles.items():
        pal.setColor(QPalette.ColorRole[name], QColor(colour))
    for name, colour in disabled.items():
        pal.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole[name], QColor(colour))
    return pal


def load_theme(settings: QSettings) -> str:
    value = str(settings.value(SETTINGS_KEY, "system") or "system")
    return value if value in THEMES else "system"


def save_theme(settings: QSettings, theme: str) -> None:
    if theme not in THEMES:
        raise ValueError(f"theme {theme!r} is not one of {', '.join(THEMES)}")
    settings.setValue(SETTINGS_KEY, theme)
    settings.sync()


def apply_theme(app: QApplication, theme: str) -> None:
    """Apply a theme to the whole app; "system" restores what the platform gave."""
    global _system_palette, _system_style
    if _system_palette is None:
        _system_palette = QPalette(app.palette())
        _system_style = app.style().name()
    if theme == "system":
        if _system_style:
            app.setStyle(_system_style)
        app.setPalette(_system_palette)
        return
    app.setStyle("Fusion")  # platform styles may ignore the palette; Fusion draws with it
    app.setPalette(palette_for(theme))
