"""The toolkit plugins build with: public, documented, typed modules (CONTRIBUTING.md lists them).

Views and multi-crop (``augment``), the small Vision Transformer (``transformer``), backbone
registration (``backbones``), heads and momentum encoders (``heads``), replay buffers (``buffers``),
quadratic regularisers (``regularizers``), distillation (``distill``), linear probes (``probes``), class
groups for streams (``class_groups``), stream split files (``splits``), image files and their decoded
cache (``imagefiles``, ``imagecache``) and transform domains (``domain_transforms``).
"""
