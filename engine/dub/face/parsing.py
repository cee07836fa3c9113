"""BiSeNet face parsing (19 classes: 1 skin, 10 nose, 11 mouth, 12/13 lips, 14 neck, ...).

The network of the widely used face-parsing checkpoint `79999_iter.pth`: a ResNet-18 context
path with attention refinement, a feature-fusion module and three classifier heads, of which
only the full-resolution one is used. Loaded with strict key checking.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import InputError
from engine.weights.loading import load_into, read_checkpoint

N_CLASSES = 19
PARSE_SIZE = 512
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvBNReLU(nn.Module):
    def __init__(self, cin, cout, k=3, stride=1, padding=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + residual)


class ResNet18(nn.Module):
    """The backbone; returns the stride-8, -16 and -32 feature maps."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512))

    def forward(self, x):
        x = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        feat8 = self.layer2(x)
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class AttentionRefinement(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = ConvBNReLU(cin, cout)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x):
        feat = self.conv(x)
        atten = torch.sigmoid(self.bn_atten(self.conv_atten(F.avg_pool2d(feat, feat.shape[2:]))))
        return feat * atten


class ContextPath(nn.Module):
    def __init__(self):
        super().__init__()
        self.resnet = ResNet18()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, 1, 1, 0)

    def forward(self, x):
        feat8, feat16, feat32 = self.resnet(x)
        avg = self.conv_avg(F.avg_pool2d(feat32, feat32.shape[2:]))
        feat32_sum = self.arm32(feat32) + F.interpolate(avg, feat32.shape[2:], mode="nearest")
        feat32_up = self.conv_head32(F.interpolate(feat32_sum, feat16.shape[2:], mode="nearest"))
        feat16_sum = self.arm16(feat16) + feat32_up
        feat16_up = self.conv_head16(F.interpolate(feat16_sum, feat8.shape[2:], mode="nearest"))
        return feat8, feat16_up, feat32_up


class FeatureFusion(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, 1, 1, 0)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, spatial, context):
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(F.avg_pool2d(feat, feat.shape[2:])))))
        return feat * atten + feat


class ParsingHead(nn.Module):
    def __init__(self, cin, mid, n_classes):
        super().__init__()
        self.conv = ConvBNReLU(cin, mid)
        self.conv_out = nn.Conv2d(mid, n_classes, 1, bias=False)

    def forward(self, x):
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    def __init__(self, n_classes: int = N_CLASSES):
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = ParsingHead(256, 256, n_classes)
        # the two auxiliary heads only serve training; kept so the checkpoint loads strictly
        self.conv_out16 = ParsingHead(128, 64, n_classes)
        self.conv_out32 = ParsingHead(128, 64, n_classes)

    def forward(self, x):
        """Class scores at the input resolution, [B, 19, H, W] (the full-resolution head only)."""
        feat8, feat_cp8, _ = self.cp(x)
        out = self.conv_out(self.ffm(feat8, feat_cp8))
        return F.interpolate(out, x.shape[2:], mode="bilinear", align_corners=True)


class FaceParser:
    """BiSeNet on a face crop: `parse(rgb)` gives the 512x512 class map."""

    def __init__(self, net: BiSeNet, device="cpu"):
        self.net, self.device = net, torch.device(device)

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> "FaceParser":
        """Read `79999_iter.pth` from a face-parse-bisent folder (or a models folder holding one)."""
        folder = Path(folder)
        if (folder / "face-parse-bisent").is_dir():
            folder = folder / "face-parse-bisent"
        net = BiSeNet()
        ckpt = read_checkpoint(folder / "79999_iter.pth")
        # the weights are copied out: the released file may hold strided views into one storage
        load_into(net, ckpt, {n: n for n in net.state_dict()}, device=device, label="BiSeNet face parser")
        for p in net.parameters():
            p.data = p.data.contiguous()
        return cls(net.eval().requires_grad_(False), device)

    @torch.no_grad()
    def scores(self, rgb) -> torch.Tensor:
        """[19, 512, 512] float scores of an RGB image (PIL or uint8 array), resized with Pillow's BILINEAR."""
        from PIL import Image

        image = rgb if isinstance(rgb, Image.Image) else Image.fromarray(np.asarray(rgb))
        if image.mode != "RGB":
            raise InputError("The face parser needs an RGB image.")
        image = image.resize((PARSE_SIZE, PARSE_SIZE), Image.BILINEAR)
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous().float().div(255)
        x = x.sub(torch.tensor(IMAGENET_MEAN)[:, None, None]).div(torch.tensor(IMAGENET_STD)[:, None, None])
        return self.net(x[None].to(self.device))[0].float().cpu()

    def parse(self, rgb) -> np.ndarray:
        """Class map [512, 512] int64 (argmax; a tie goes to the lower class)."""
        return self.scores(rgb).numpy().argmax(0)
